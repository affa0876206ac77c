"""Two hosts, one converge (issue 15): placement, wiring, keys and llama.cpp RPC across real sandboxes.

Host A is the session's sandbox (this machine's network): the application stack, its brain on
the host's network, the summary server, and a server split over A and B with llama.cpp RPC.
Host B is a second sandbox on a Docker network this module creates: the Q4 server, bound to
B's address there with a key, and an rpc-server worker. One pyinfra run with an inventory of
both hosts wires them; the end-to-end query goes through A's brain to B's Q4 server. Then the
Q4 server moves to A, and the run changes only what issue 15 item 2 lists. B's ports beyond
loopback answer only A (its firewall, issue 26 item 8): a third address on the network gets no
connection. Everything this
module creates (network, sandbox B, its Hugging Face mirror) is removed by name at the end,
and A is converged back to the session's own data.

The only addresses used: loopback, and the addresses on the network created here.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from sandbox import converge as sandbox_converge
from tasks import config
from tasks.host import layout
from tasks.inference import scrape_keys
from tests.e2e.conftest import NAME, ROOT, converge, sandbox_data, split_server, ssh, wait_healthy
from tests.e2e.test_observability import prometheus_binary

pytestmark = pytest.mark.e2e

OFFSET = int(os.environ["KITTY_SANDBOX_PORT_OFFSET"])
B_NAME = f"{NAME}-hostb"
NETWORK = f"{NAME}-two-hosts"
LABEL = "kitty-ops.e2e.two-hosts=1"
HF_MIRROR = sandbox_converge.HF_MIRROR
SANDBOX = sandbox_converge.SANDBOX
WORKER_PORT = 50052 + OFFSET
SPLIT_PORT = 8087 + OFFSET
# A real Prometheus on A (this machine's network, hence the offset), as the account its key copies are for.
PROM_PORT = 19191 + OFFSET
PROM_DIR = f"/tmp/{NAME}-two-hosts-prometheus"
PROMETHEUS_USER = "nobody"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def docker(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=check, timeout=120)


class Hosts:
    """What the module built: both hosts' inventory names, B's network, and the files of the runs."""

    def __init__(self, folder: Path, b_address: str, gateway: str, mirror_port: int):
        self.folder, self.b, self.gateway, self.mirror_port = folder, b_address, gateway, mirror_port
        self.a = "127.0.0.1"
        self.keys = folder / "keys"
        self.data = sandbox_data()
        self.servers = self.data["kitty_servers"]
        self.stack = self.data["kitty_stack"]

    def ssh_data(self, name: str, port: int) -> dict:
        state = ROOT / ".sandbox" / name
        return {
            "ssh_user": "admin",
            "ssh_port": port,
            "ssh_key": str(state / "id_ed25519"),
            "ssh_known_hosts_file": str(state / "known_hosts"),
            "ssh_strict_host_key_checking": "yes",
        }

    def inventory(self, a_serves: list[str], b_serves: list[str]) -> str:
        """An inventory file of both hosts (the example inventories/two-macs.py, with sandbox addresses)."""
        a = {**self.ssh_data(NAME, int(sandbox_converge.sandbox_env(NAME)["KITTY_HOSTS"].rpartition(":")[2]))}
        a["kitty_serves"] = a_serves
        # A (this machine's network) reaches B from the network's gateway: B's firewall lets in that address.
        a["kitty_address"] = self.gateway
        b = {**self.ssh_data(B_NAME, 22), "kitty_serves": b_serves}
        # B reaches this machine's mirror at its network's gateway (the mirror listens there too).
        b["kitty_model_policy"] = {
            **self.data["kitty_model_policy"],
            "hf_endpoint": f"http://{self.gateway}:{self.mirror_port}",
        }
        # rpc-server has no authentication: it binds to B's address on the test's network only.
        b["kitty_rpc_worker"] = {"port": WORKER_PORT, "host": self.b, "allow_beyond_loopback": True, "threads": 1}
        path = self.folder / f"inventory-{'-'.join(a_serves)}.py"
        path.write_text(
            "# Written by tests/e2e/test_two_hosts.py.\n"
            f"application = [({self.a!r}, {a!r})]\n"
            f"inference = [({self.a!r}, {a!r}), ({self.b!r}, {b!r})]\n"
        )
        return str(path)

    def overrides(self) -> dict:
        servers = dict(self.servers)
        # Every layer on B's rpc-server: B computes, A's server drives it.
        servers["split"] = split_server(SPLIT_PORT, [self.b])
        # A's Prometheus (tests/e2e/test_two_hosts.py runs one) runs as nobody: its copies of the keys are nobody's.
        scrape = {**self.data.get("kitty_metrics", {}), "prometheus_user": PROMETHEUS_USER}
        return {"kitty_servers": servers, "kitty_metrics": scrape}

    def converge(self, a_serves: list[str], b_serves: list[str]):
        return converge(
            NAME,
            self.folder / "group_data",
            overrides=self.overrides(),
            inventory=self.inventory(a_serves, b_serves),
            env={"KITTY_KEYS_DIR": str(self.keys)},
        )


@pytest.fixture(scope="module")
def hosts(sandbox, tmp_path_factory):
    folder = tmp_path_factory.mktemp("two-hosts")
    created = {"network": False, "mirror": None}
    try:
        docker("network", "rm", NETWORK, check=False)  # a leftover of an interrupted run of this module
        docker("network", "create", "--label", LABEL, NETWORK)
        created["network"] = True
        gateway = docker("network", "inspect", "-f", "{{(index .IPAM.Config 0).Gateway}}", NETWORK).stdout.strip()
        port = free_port()
        subprocess.run([*HF_MIRROR, "serve", "--port", str(port), "--bind", gateway], check=True, timeout=120)
        created["mirror"] = port
        subprocess.run(
            [*SANDBOX, "start", "--name", B_NAME, "--network", NETWORK, "--replace"], check=True, timeout=900
        )
        b_address = sandbox_converge.sandbox_env(B_NAME)["KITTY_SANDBOX_ADDRESS"]
        yield Hosts(folder, b_address, gateway, port)
    finally:
        # Only what this module created, by name: B, its network, its mirror.
        subprocess.run([*SANDBOX, "stop", "--name", B_NAME], check=False, timeout=300)
        if created["network"]:
            docker("network", "rm", NETWORK, check=False)
        if created["mirror"]:
            subprocess.run([*HF_MIRROR, "stop", "--port", str(created["mirror"])], check=False, timeout=60)
            shutil.rmtree(ROOT / ".sandbox" / "hf" / str(created["mirror"]), ignore_errors=True)
        # A back to the session's own data (one host, its own servers) for the modules after this one.
        back = converge(NAME)
        assert back.code == 0, back.output[-3000:]


@pytest.fixture(scope="module")
def wired(hosts):
    """The first converge of both hosts: Q4 on B, summary and split on A, B's rpc-server for the split."""
    result = hosts.converge(["summary", "split"], ["q4"])
    assert result.code == 0 and not result.failed, f"{result.failed}\n{result.output[-6000:]}"
    return result


def on_b(command: str, check: bool = True) -> subprocess.CompletedProcess:
    return ssh(B_NAME, command, check=check)


def env_line(name: str) -> str:
    """One line of A's .env, by name (the value of a URL: no secret)."""
    out = ssh(NAME, f"grep '^{name}=' /srv/kitty/KITT/.env || true").stdout.strip()
    return out.partition("=")[2].strip("'")


def brain_port(hosts: Hosts) -> int:
    return hosts.stack["services"]["brain"]["port"]


def query(hosts: Hosts) -> httpx.Response:
    return httpx.post(
        f"http://127.0.0.1:{brain_port(hosts)}/api/query",
        json={"query": "Say hello.", "userId": "two-hosts"},
        timeout=120,
    )


def stack_containers(hosts: Hosts) -> dict[str, str]:
    project = hosts.stack["project_name"]
    out = docker(
        "ps", "--filter", f"label=com.docker.compose.project={project}", "--format",
        '{{.Label "com.docker.compose.service"}} {{.ID}}',
    ).stdout  # fmt: skip
    return dict(line.split() for line in out.splitlines())


def test_b_binds_q4_to_its_address_with_a_key_and_runs_the_rpc_worker(hosts, wired):
    q4 = hosts.servers["q4"]["port"]
    listening = on_b("ss -Htln").stdout
    assert f"{hosts.b}:{q4}" in listening and f"127.0.0.1:{q4}" not in listening
    assert f"{hosts.b}:{WORKER_PORT}" in listening
    # The key is 0600 on B, and the unit's command line names only its file.
    assert on_b("sudo stat -c '%a' /opt/kitty/keys/q4.key").stdout.strip() == "600"
    key = (hosts.keys / "q4.key").read_text().strip()
    argv = on_b("systemctl show -p ExecStart --value kitty-llama-q4.service").stdout
    assert "--api-key-file /opt/kitty/keys/q4.key" in argv and key not in argv


def test_a_request_to_bs_server_without_the_key_is_refused(hosts, wired):
    url = f"http://{hosts.b}:{hosts.servers['q4']['port']}/v1/models"
    assert httpx.get(url, timeout=10).status_code == 401
    assert httpx.get(url, headers={"Authorization": "Bearer wrong"}, timeout=10).status_code == 401
    completion = {"messages": [{"role": "user", "content": "Say hello."}], "max_tokens": 4}
    assert httpx.post(url.replace("/models", "/chat/completions"), json=completion, timeout=30).status_code == 401
    key = (hosts.keys / "q4.key").read_text().strip()
    assert httpx.get(url, headers={"Authorization": f"Bearer {key}"}, timeout=10).status_code == 200


def connects(ports: list[int], address: str, network: str | None = None) -> dict[int, str]:
    """{port: "open" | "refused" | "timeout"}: a TCP connection to each port of `address`, from this
    machine, or from a new container on `network` (a third address there)."""
    probe = (
        "import socket, sys\n"
        "for port in sys.argv[2:]:\n"
        "    try:\n"
        "        socket.create_connection((sys.argv[1], int(port)), timeout=5).close(); print(port, 'open')\n"
        "    except ConnectionRefusedError: print(port, 'refused')\n"
        "    except OSError: print(port, 'timeout')\n"
    )
    argv = ["python3", "-c", probe, address, *map(str, ports)]
    if network is not None:
        image = docker("inspect", "-f", "{{.Config.Image}}", B_NAME).stdout.strip()
        argv = [
            "docker",
            "run",
            "--rm",
            "--network",
            network,
            "--label",
            LABEL,
            "--entrypoint",
            "python3",
            image,
            *argv[1:],
        ]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=True)
    return {int(port): state for port, state in (line.split() for line in done.stdout.splitlines())}


def test_bs_ports_beyond_loopback_answer_a_alone(hosts, wired):
    """B's nftables table lets in A's address (the gateway, where this machine and A's brain come
    from) on q4's port and its rpc-server's; a third address on the same network is refused."""
    q4 = hosts.servers["q4"]["port"]
    # From A's address: q4's port opens. (Not the worker's: rpc-server, busy with A's split server,
    # accepts nobody else, and each connection made would hold one of its listen backlog's two
    # places until the converge's own probe found none. A reaching it is the split's completion.)
    assert connects([q4], hosts.b) == {q4: "open"}
    assert connects([q4, WORKER_PORT], hosts.b, network=NETWORK) == {q4: "refused", WORKER_PORT: "refused"}
    rules = on_b("sudo nft list table inet kitty_ops").stdout.splitlines()
    for port in (q4, WORKER_PORT):
        # nft lists a set of one as its element: `ip saddr 172.x.0.1` or `ip saddr { ... }`.
        assert any(f"dport {port} ip saddr" in r and hosts.gateway in r and "accept" in r for r in rules), rules
        assert any(f"dport {port} reject" in r for r in rules), rules
    # Kept at boot: the unit that loads it is enabled.
    assert on_b("systemctl is-enabled kitty-firewall.service").stdout.strip() == "enabled"


def test_the_query_goes_through_as_brain_to_bs_q4_server(hosts, wired):
    q4_url = f"http://{hosts.b}:{hosts.servers['q4']['port']}"
    assert env_line("LLAMACPP_Q4_HOST") == q4_url
    health = httpx.get(f"http://127.0.0.1:{brain_port(hosts)}/health", timeout=10).json()
    assert health["status"] == "ok", health
    assert health["dependencies"]["llamacpp_q4"]["url"] == q4_url
    reply = query(hosts)
    assert reply.status_code == 200, reply.text
    assert reply.json()["response"].strip()
    assert reply.json()["model"] == "kitty-q4"


def test_a_server_split_over_a_and_b_answers_a_completion(hosts, wired):
    argv = ssh(NAME, "systemctl show -p ExecStart --value kitty-llama-split.service").stdout
    assert f"--rpc {hosts.b}:{WORKER_PORT}" in argv
    wait_healthy(SPLIT_PORT)
    reply = httpx.post(
        f"http://127.0.0.1:{SPLIT_PORT}/v1/chat/completions",
        json={"messages": [{"role": "user", "content": "Say hello."}], "max_tokens": 8, "temperature": 0},
        timeout=120,
    )
    assert reply.status_code == 200, reply.text
    assert reply.json()["choices"][0]["message"]["content"].strip()


@pytest.fixture(scope="module")
def prometheus(hosts, wired, tmp_path_factory):
    """Debian's Prometheus on A, as `nobody`, with the scrape jobs the deploy wrote on A (copied into
    its config: 2.42 predates scrape_config_files) and one job of this test's that sends no key."""
    binary = prometheus_binary(tmp_path_factory.mktemp("prometheus"))
    cfg = config.load({**hosts.data, **hosts.overrides()})
    jobs = ssh(NAME, f"cat {layout.metrics_jobs(cfg)}").stdout
    no_key = (
        "  - job_name: no-key\n"
        f"    file_sd_configs: [{{files: [{json.dumps(layout.metrics_targets(cfg))}], refresh_interval: 2s}}]\n"
        "    relabel_configs:\n"
        "      - {source_labels: [__kitty_job], regex: kitty-llama-q4, action: keep}\n"
    )
    body = jobs.partition("scrape_configs:\n")[2].replace(
        "      - files: [", "      - refresh_interval: 2s\n        files: ["
    )
    config_text = "global: {scrape_interval: 1s, evaluation_interval: 5s}\nscrape_configs:\n" + body + no_key
    ssh(NAME, f"rm -rf {PROM_DIR} && mkdir -p {PROM_DIR} && sudo install -d -o {PROMETHEUS_USER} {PROM_DIR}/data")
    subprocess.run(["docker", "cp", str(binary), f"{NAME}:{PROM_DIR}/prometheus"], check=True)
    ssh(NAME, f"cat > {PROM_DIR}/prometheus.yml <<'EOF'\n{config_text}EOF")
    started = ssh(
        NAME,
        f"cd {PROM_DIR} || exit 1; nohup sudo -n -u {PROMETHEUS_USER} ./prometheus --config.file=prometheus.yml "
        f"--storage.tsdb.path=data --web.listen-address=127.0.0.1:{PROM_PORT} >prometheus.log 2>&1 </dev/null "
        "& echo $!",
    )
    # sudo's PID: it passes SIGTERM on to Prometheus.
    pid = int(started.stdout.split()[-1])
    yield cfg
    ssh(NAME, f"sudo kill {pid}; sleep 1; tail -5 {PROM_DIR}/prometheus.log", check=False)


def prometheus_targets() -> list[dict]:
    body = httpx.get(f"http://127.0.0.1:{PROM_PORT}/api/v1/targets?state=active", timeout=5).json()
    return body["data"]["activeTargets"]


def prometheus_query(expression: str) -> list[dict]:
    body = httpx.get(f"http://127.0.0.1:{PROM_PORT}/api/v1/query", params={"query": expression}, timeout=5).json()
    return body["data"]["result"]


def wait_for_targets(what: str, predicate, timeout: float = 90) -> list[dict]:
    deadline, last = time.monotonic() + timeout, None
    while time.monotonic() < deadline:
        try:
            last = prometheus_targets()
            if predicate(last):
                return last
        except (httpx.HTTPError, ValueError, KeyError) as error:
            last = error
        time.sleep(1)
    raise AssertionError(f"Prometheus on A: {what} not seen in {timeout}s; last: {last}")


def test_as_prometheus_scrapes_bs_keyed_server_with_a_copy_of_its_key_only_prometheus_reads(hosts, wired, prometheus):
    cfg = prometheus
    q4 = hosts.servers["q4"]["port"]
    key = (hosts.keys / "q4.key").read_text().strip()
    # A's targets: B's q4 at the address A's .env uses, sent to its keyed job; A's own servers on loopback.
    targets = {e["labels"]["server"]: e for e in json.loads(ssh(NAME, f"cat {layout.metrics_targets(cfg)}").stdout)}
    assert targets["q4"]["targets"] == [f"{hosts.b}:{q4}"] and env_line("LLAMACPP_Q4_HOST") == f"http://{hosts.b}:{q4}"
    assert targets["q4"]["labels"] == {
        "server": "q4",
        "model": hosts.servers["q4"]["model"],
        "host": hosts.b,
        "__kitty_job": "kitty-llama-q4",
    }
    assert targets["split"]["targets"] == [f"127.0.0.1:{SPLIT_PORT}"]
    # The copy of the key: nobody's, 0600; the admin cannot read it; no file, no output names the key.
    copy = scrape_keys.key_path(cfg, "q4")
    assert ssh(NAME, f"sudo stat -c '%a %U' {copy}").stdout.split() == ["600", PROMETHEUS_USER]
    assert ssh(NAME, f"cat {copy}", check=False).returncode != 0
    for path in (layout.metrics_targets(cfg), layout.metrics_jobs(cfg)):
        assert key not in ssh(NAME, f"cat {path}").stdout, path
    assert key not in wired.output

    # The real Prometheus: every server of both hosts up under one job, B's q4 with its key.
    # Placed: B runs q4, A summary and split (every enabled server runs somewhere).
    wanted = {"q4", "summary", "split"}

    def all_up(found):
        up = {
            t["labels"].get("server") for t in found if t["labels"].get("job") == "kitty-llama" and t["health"] == "up"
        }
        return up == wanted

    found = wait_for_targets(f"{sorted(wanted)} up", all_up)
    by_server = {t["labels"]["server"]: t for t in found if t["labels"]["job"] == "kitty-llama"}
    assert by_server["q4"]["scrapeUrl"] == f"http://{hosts.b}:{q4}/metrics"
    assert by_server["q4"]["labels"]["host"] == hosts.b
    assert [r["value"][1] for r in prometheus_query('up{job="kitty-llama",server="q4"}')] == ["1"]
    series = prometheus_query('{__name__=~"llamacpp:.+",server="q4"}')
    assert series and all(r["metric"]["host"] == hosts.b for r in series), series

    # The same target without the key: B refuses the scrape.
    refused = wait_for_targets("the scrape without the key refused", lambda ts: any(
        t["labels"].get("job") == "no-key" and t["health"] == "down" for t in ts))  # fmt: skip
    (no_key,) = [t for t in refused if t["labels"].get("job") == "no-key"]
    assert "401" in no_key["lastError"], no_key


# What issue 15 item 2 allows when a server moves from B to A: B stops and removes it, A
# installs and starts it, A's .env changes, compose recreates what reads the variable.
MOVE_ALLOWED = (
    r"^Model servers \| server q4: ",
    r"^Model servers \| Wait for .*q4",
    r"^Application stack \| Write \.env ",
    r"^Application stack \| docker compose up$",
    r"^Application stack \| Wait for the stack's health$",
    # Prometheus's scrape targets follow the server (its host label and address).
    r"^Metrics \| ",
    # B no longer has a server with a key: its key file goes with it.
    r"^API keys \| .*q4",
    # B's firewall drops q4's port (its rpc-server's stays).
    r"^Firewall \| ",
)


def changed_on(result, host_name: str) -> list[str]:
    """The names of the operations that changed `host_name`. pyinfra's --json merges one
    operation's names over the hosts (`names`, e.g. install on A, remove on B): all of them."""
    return [name for op in result.operations if host_name in op["success"] for name in op["names"]]


def test_moving_q4_from_b_to_a_changes_only_that_server_the_env_and_the_brain(hosts, wired):
    before = stack_containers(hosts)
    result = hosts.converge(["q4", "summary", "split"], [])
    assert result.code == 0 and not result.failed, f"{result.failed}\n{result.output[-6000:]}"
    on_a, on_b_ = changed_on(result, hosts.a), changed_on(result, hosts.b)
    unexpected = [name for name in on_a + on_b_ if not any(re.search(p, name) for p in MOVE_ALLOWED)]
    assert not unexpected, f"the move changed more than item 2 lists: {unexpected} (A: {on_a}, B: {on_b_})"
    assert any(re.search(r"server q4: stop and remove \(runs on 127\.0\.0\.1\)", name) for name in on_b_), on_b_
    assert any(re.search(r"server q4: install", name) for name in on_a), on_a
    assert "Application stack | docker compose up" in on_a
    # B: no q4 any more; its rpc-server still serves A's split server.
    assert on_b("systemctl cat kitty-llama-q4.service", check=False).returncode != 0
    listening = on_b("ss -Htln").stdout
    assert f":{hosts.servers['q4']['port']} " not in listening and f"{hosts.b}:{WORKER_PORT}" in listening
    # Its firewall went with the server; the rpc-server's port still answers A alone.
    table = on_b("sudo nft list table inet kitty_ops").stdout
    assert f"dport {hosts.servers['q4']['port']} " not in table and f"dport {WORKER_PORT} " in table
    # A: q4 on its loopback, the .env and only the brain (which reads it) recreated.
    assert env_line("LLAMACPP_Q4_HOST") == f"http://127.0.0.1:{hosts.servers['q4']['port']}"
    after = stack_containers(hosts)
    assert after["brain"] != before["brain"]
    assert {k: v for k, v in after.items() if k != "brain"} == {k: v for k, v in before.items() if k != "brain"}
    reply = query(hosts)
    assert reply.status_code == 200, reply.text
    assert json.loads(reply.text)["response"].strip()


def test_after_the_move_as_prometheus_scrapes_q4_on_a_and_bs_address_left_its_targets(hosts, prometheus):
    """Runs after the move above: q4 on A's loopback, without a key; A's copy of its key is gone."""
    cfg = prometheus
    q4 = hosts.servers["q4"]["port"]

    def moved(found):
        q4s = [t for t in found if t["labels"].get("server") == "q4"]
        return [(t["labels"]["job"], t["scrapeUrl"], t["health"]) for t in q4s] == [
            ("kitty-llama", f"http://127.0.0.1:{q4}/metrics", "up")
        ]

    found = wait_for_targets("q4 on A's loopback, alone", moved)
    assert not [t for t in found if hosts.b in t["scrapeUrl"]], found
    assert hosts.b not in ssh(NAME, f"cat {layout.metrics_targets(cfg)}").stdout
    assert ssh(NAME, f"sudo test -e {scrape_keys.key_path(cfg, 'q4')}", check=False).returncode == 1
