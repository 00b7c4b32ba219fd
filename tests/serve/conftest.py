"""Starts `smelt serve` on loopback for the tests, as llama.cpp's server tests do.

The binary is $SMELT_BIN (default debug/smelt in $CARGO_TARGET_DIR, or in target/), the
model SmolLM2-135M-Instruct's
Q4_1 GGUF from $SMELT_LLM_TESTDATA (default target/llm-testdata; `.ci/run` makes it).
Every server is started with --port 0 (the port it picked is read from its log) and
--exit-after, so none outlives the tests.
"""

import os
import pathlib
import re
import signal
import subprocess
import time

import openai
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
TARGET = pathlib.Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
BIN = os.environ.get("SMELT_BIN", str(TARGET / "debug" / "smelt"))
DATA = pathlib.Path(os.environ.get("SMELT_LLM_TESTDATA", ROOT / "target" / "llm-testdata"))
MODEL = DATA / "SmolLM2-135M-Instruct.Q4_1.gguf"
NAME = "SmolLM2-135M-Instruct.Q4_1"
KEY = "sk-smelt-test"


def require_data():
    for path in (pathlib.Path(BIN), MODEL):
        if not path.exists():
            message = f"{path} is missing: run `cargo build` and `python3 scripts/llm-testdata.py target/llm-testdata`"
            if os.environ.get("CI"):
                pytest.fail(message)
            pytest.skip(message)


class Server:
    """A running `smelt serve` and its log."""

    def __init__(self, *flags, exit_after=600):
        require_data()
        TARGET.mkdir(parents=True, exist_ok=True)
        self.log_path = TARGET / f"serve-test-{os.getpid()}-{time.monotonic_ns()}.log"
        self.log = open(self.log_path, "w+")
        args = [BIN, "serve", str(MODEL), "--host", "127.0.0.1", "--port", "0",
                "--exit-after", str(exit_after), *flags]
        self.proc = subprocess.Popen(args, stdout=self.log, stderr=self.log)
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            text = self.log_path.read_text()
            found = re.search(r"listening on (http://[0-9.:]+)", text)
            if found:
                self.url = found.group(1)
                return
            if self.proc.poll() is not None:
                raise RuntimeError(f"smelt serve exited {self.proc.returncode}:\n{text}")
            time.sleep(0.1)
        self.proc.kill()
        raise RuntimeError("smelt serve did not start in 180 s")

    def client(self, key=KEY, **kw):
        return openai.OpenAI(base_url=self.url + "/v1", api_key=key, max_retries=0, **kw)

    def metric(self, name):
        import urllib.request
        text = urllib.request.urlopen(self.url + "/metrics", timeout=10).read().decode()
        for line in text.splitlines():
            if line.startswith(f"smelt_{name} "):
                return float(line.split()[1])
        raise KeyError(name)

    def stop(self, timeout=60):
        """SIGTERM, then the exit code (killed after `timeout` s)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise
        finally:
            self.log.close()


@pytest.fixture(scope="session")
def server():
    s = Server("--parallel", "4", "--api-key", KEY, "--max-body", "65536")
    yield s
    assert s.stop() == 0, s.log_path.read_text()


@pytest.fixture
def client(server):
    return server.client()
