"""A model file's stamp against a sha256 pinned after it was stamped, with normal (stamp) verification.

Normal verification trusts a stamp whose size and mtime still match the file
and never hashes. A stamp records the hash the file had when it was verified;
when the lock then pins another sha256 (the model was re-locked, or the first
stamp came from an unpinned download), that stamp vouches for a file the lock
no longer wants: the file is fetched again, without a full verify.
"""

from __future__ import annotations

import copy

from tasks import config
from tasks.inference import models
from tests.plan import hosts, inference_facts
from tests.plan.harness import plan
from tests.plan.test_models import CFG, HERMES, STATES_KEY, _lock_with_hermes, fetches

SIZE = 4_900_000_000
STAMPED, PINNED = "1" * 64, "ab" * 32


def hermes_stamped_with(sha256: str) -> dict:
    """A converged host whose Hermes file carries a stamp with `sha256` (size and mtime unchanged)."""
    facts = hosts.linux_converged()
    stamp = f"{sha256} {SIZE} {inference_facts.MTIME}"
    facts[STATES_KEY] = [
        f"{HERMES}|{SIZE} {inference_facts.MTIME}|{stamp}|-" if line.startswith(f"{HERMES}|") else line
        for line in facts[STATES_KEY]
    ]
    return facts


def pinned(tmp_path) -> dict:
    data = copy.deepcopy(hosts.DEFAULTS)
    data["kitty_model_policy"]["lock_file"] = str(_lock_with_hermes(tmp_path, sha256=PINNED, size=SIZE))
    return data


def test_a_stamp_of_another_hash_than_the_newly_pinned_one_is_fetched_again(tmp_path):
    data = pinned(tmp_path)
    assert config.load(data).model_policy.verify != "full"
    assert fetches(plan(hermes_stamped_with(STAMPED), data=data)) == [HERMES]


def test_a_stamp_of_the_pinned_hash_is_trusted_without_hashing(tmp_path):
    assert fetches(plan(hermes_stamped_with(PINNED), data=pinned(tmp_path))) == []


def hermes(**pin) -> models.Wanted:
    wanted = next(w for w in models.wanted_files(CFG) if w.rel == HERMES)
    return models.Wanted(wanted.model_name, wanted.model, wanted.file.model_copy(update=pin))


def stamped(sha256: str = STAMPED, size: int = SIZE) -> dict:
    """A file's state as ModelFileStates reads it: present, at `size`, with a stamp of that size and mtime."""
    stamp = {"sha256": sha256, "size": size, "mtime": inference_facts.MTIME}
    return {"exists": True, "size": size, "mtime": inference_facts.MTIME, "stamp": stamp, "sha256": None, "partial": 0}


def test_is_verified_compares_the_stamp_with_the_pin_without_hashing():
    assert not models.is_verified(hermes(sha256=PINNED), stamped(STAMPED), full=False)
    assert models.is_verified(hermes(sha256=PINNED), stamped(PINNED), full=False)


def test_a_stamp_of_another_size_than_the_pinned_one_is_not_trusted():
    """A lock that pins the size (and no hash): a stamped file of another size is fetched again."""
    assert not models.is_verified(hermes(sha256=None, size=SIZE + 1), stamped(), full=False)
    assert models.is_verified(hermes(sha256=None, size=SIZE), stamped(), full=False)


def test_a_file_never_seen_or_found_without_a_stamp_is_not_verified():
    assert not models.is_verified(hermes(sha256=PINNED), None, full=False)
    unstamped = {**stamped(PINNED), "stamp": None}
    assert not models.is_verified(hermes(sha256=PINNED), unstamped, full=False)
