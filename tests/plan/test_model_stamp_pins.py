"""A model file's stamp against a sha256 pinned after it was stamped, with normal (stamp) verification.

Normal verification trusts a stamp whose size and mtime still match the file
and never hashes. A stamp records the hash the file had when it was verified;
when the lock then pins another sha256 (the model was re-locked, or the first
stamp came from an unpinned download), that stamp vouches for a file the lock
no longer wants: the file is fetched again, without a full verify.
"""

from __future__ import annotations

import copy

from tasks import config, models
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


def test_is_verified_compares_the_stamp_with_the_pin_without_hashing():
    wanted = next(w for w in models.wanted_files(CFG) if w.rel == HERMES)
    wanted = models.Wanted(wanted.model_name, wanted.model, wanted.file.model_copy(update={"sha256": PINNED}))
    state = {
        "exists": True,
        "size": SIZE,
        "mtime": inference_facts.MTIME,
        "stamp": {"sha256": STAMPED, "size": SIZE, "mtime": inference_facts.MTIME},
        "sha256": None,
        "partial": 0,
    }
    assert not models.is_verified(wanted, state, full=False)
    state["stamp"]["sha256"] = PINNED
    assert models.is_verified(wanted, state, full=False)
