"""Load test of smelt serve (run by .ci/run): N concurrent streaming clients for a
bounded time on loopback. Each client checks that every greedy answer it streams equals
the answer to the same request run alone, so no request is lost or failed and no
sequence's tokens are mixed with another's; the server's resident memory must stay
flat after the first third of the run.

    python tests/serve/load_test.py [--clients 32] [--seconds 60] [--parallel 8]
"""

import argparse
import sys
import threading
import time

sys.path.insert(0, __import__("os").path.dirname(__file__))
from conftest import NAME, Server  # noqa: E402

PROMPTS = ["The capital of France is", "1, 2, 3, 4,", "Water boils at", "The opposite of hot is",
           "Once upon a time", "My favourite food is", "The sun rises in the", "Rust is a"]
MAX_TOKENS = 16


def rss_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--parallel", type=int, default=8)
    args = ap.parse_args()
    server = Server("--parallel", str(args.parallel), "--queue", str(4 * args.clients),
                    exit_after=args.seconds + 300)
    try:
        client = server.client(timeout=120)
        alone = {p: client.completions.create(model=NAME, prompt=p, temperature=0,
                                              max_tokens=MAX_TOKENS).choices[0].text
                 for p in PROMPTS}
        done, failures, tokens = [0], [], [0]
        lock = threading.Lock()
        deadline = time.monotonic() + args.seconds

        def run(i):
            k = i
            while time.monotonic() < deadline:
                prompt = PROMPTS[k % len(PROMPTS)]
                k += 1
                try:
                    chunks = list(client.completions.create(
                        model=NAME, prompt=prompt, temperature=0, max_tokens=MAX_TOKENS,
                        stream=True, stream_options={"include_usage": True}))
                    text = "".join(c.choices[0].text for c in chunks if c.choices)
                    with lock:
                        if text != alone[prompt]:
                            failures.append(f"client {i}: {prompt!r} gave {text!r}, alone {alone[prompt]!r}")
                        done[0] += 1
                        tokens[0] += chunks[-1].usage.completion_tokens
                except Exception as e:  # noqa: BLE001 - every failure is reported
                    with lock:
                        failures.append(f"client {i}: {prompt!r} failed: {e!r}")

        threads = [threading.Thread(target=run, args=(i,)) for i in range(args.clients)]
        start = time.monotonic()
        [t.start() for t in threads]
        samples = []
        while any(t.is_alive() for t in threads):
            samples.append((time.monotonic() - start, rss_mib(server.proc.pid)))
            time.sleep(1)
        elapsed = time.monotonic() - start
        settled = [m for t, m in samples if t >= args.seconds / 3]
        print(f"{args.clients} clients, {elapsed:.0f} s: {done[0]} requests, {tokens[0]} tokens "
              f"({tokens[0] / elapsed:.1f} tok/s), {len(failures)} failures; server RSS "
              f"{settled[0]:.0f} MiB after {args.seconds / 3:.0f} s, {max(settled):.0f} MiB at most, "
              f"{settled[-1]:.0f} MiB at the end")
        for f in failures[:10]:
            print("  " + f)
        grew = max(settled) - settled[0]
        ok = not failures and done[0] >= args.clients and grew <= max(0.1 * settled[0], 32)
        if grew > max(0.1 * settled[0], 32):
            print(f"  memory grew by {grew:.0f} MiB after the first third")
    finally:
        code = server.stop()
    return 0 if ok and code == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
