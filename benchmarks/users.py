"""Concurrent app users: each user's time to the result when N users send runs at once to the
real app (`python app.py --batch-runs N`, one shared batch) against the same run sent alone.

Goal: 8 users each see their result in at most 2x the time one user alone does. Each user asks a
different held-out question of the task (multi-hop by default: the heavy case, a retrieval and a
document prefill per answer). A round sends every user's question alone, one after another, then
all of them at once over the app's API (gradio_client), alternating which phase comes first; a
user's ratio is their concurrent time over the median of their question's alone times. Each
returned trace is checked to be that user's own (its input is the question sent).
"""
from __future__ import annotations

import json
import statistics
import threading
import time
from dataclasses import asdict, dataclass

HELP = "concurrent app users: each user's time to the result with N at once vs alone (--batch-runs N)"


def add_arguments(p) -> None:
    p.add_argument("--users", type=int, default=8, help="concurrent users (default 8); the app gets --batch-runs N")
    p.add_argument("--task", default="multi-hop", help="task (default multi-hop, held-out questions)")
    p.add_argument("--rounds", type=int, default=3, help="rounds of alone-then-together (default 3)")


@dataclass
class UsersResult:
    task: str
    users: int
    rounds: int
    alone_s: list[list[float]]  # per user, per round
    together_s: list[list[float]]  # per user, per round
    own_traces: bool

    def ratios(self) -> list[float]:
        """Every (user, round) concurrent time over that user's median alone time."""
        return [t / statistics.median(alone) for alone, times in zip(self.alone_s, self.together_s) for t in times]

    def summary(self) -> dict:
        r = self.ratios()
        return {"median_ratio": round(statistics.median(r), 2), "max_ratio": round(max(r), 2),
                "alone_median_s": round(statistics.median(x for a in self.alone_s for x in a), 2),
                "together_median_s": round(statistics.median(x for t in self.together_s for x in t), 2),
                "goal_max_2x": max(r) <= 2.0}


def _call(client, endpoint: str, text: str) -> tuple[float, str]:
    from benchmarks.app import TOP_K

    t0 = time.perf_counter()
    out = client.submit(text, TOP_K, api_name=endpoint).result()
    return time.perf_counter() - t0, json.loads(out)["input"]


def measure(url: str, task: str, questions: list[str], rounds: int) -> UsersResult:
    from benchmarks.app import ENDPOINTS, _client

    endpoint, n = ENDPOINTS[task], len(questions)
    clients = [_client(url) for _ in questions]  # one connection per user, as separate pages would be
    _call(clients[0], endpoint, questions[0])  # untimed: the first run warms the model up
    alone = [[] for _ in questions]
    together = [[] for _ in questions]
    own = True

    def concurrent() -> None:
        nonlocal own
        out: list = [None] * n
        start = threading.Barrier(n)

        def user(i: int) -> None:
            start.wait()
            out[i] = _call(clients[i], endpoint, questions[i])

        threads = [threading.Thread(target=user, args=(i,)) for i in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for i, (seconds, echoed) in enumerate(out):
            together[i].append(seconds)
            own = own and echoed == questions[i]

    def one_by_one() -> None:
        nonlocal own
        for i, q in enumerate(questions):
            seconds, echoed = _call(clients[i], endpoint, q)
            alone[i].append(seconds)
            own = own and echoed == q

    for r in range(rounds):
        for phase in ((one_by_one, concurrent) if r % 2 == 0 else (concurrent, one_by_one)):
            phase()
    return UsersResult(task, n, rounds, alone, together, own)


def main(args) -> int:
    from benchmarks.app import Server
    from benchmarks.embedded import task_inputs
    from benchmarks.report import command_line, cpu_ticks, machine_info, steal_percent, write_section

    users = min(args.users, 4) if args.quick else args.users
    rounds = 1 if args.quick else args.rounds
    if users < 1 or rounds < 1:
        print("--users and --rounds must be at least 1")
        return 2
    questions = task_inputs(args.task, users)
    server = Server(args.device, extra=("--batch-runs", str(users)))
    try:
        server.wait_ready()
        ticks = cpu_ticks()
        result = measure(server.url, args.task, questions, rounds)
    finally:
        server.stop()
    out = asdict(result) | result.summary() | {"steal_percent": steal_percent(ticks)}
    print(json.dumps(out) if args.json else json.dumps(out, indent=2))
    if args.write:
        write_section("users", markdown(result, out["steal_percent"]), command=command_line(),
                      machine=machine_info(args.device), title="Concurrent app users", path=args.write)
    return 0 if result.own_traces else 1


def markdown(result: UsersResult, steal: float | None) -> str:
    s = result.summary()
    return "\n".join([
        f"`python app.py --batch-runs {result.users}`; {result.users} users, each a different held-out "
        f"{result.task} question, over the API; {result.rounds} round(s), alone and together alternating.", "",
        "| users | alone (median) | together (median) | ratio median | ratio max | goal: max <= 2x | own traces |",
        "|---|---|---|---|---|---|---|",
        f"| {result.users} | {s['alone_median_s']} s | {s['together_median_s']} s | {s['median_ratio']}x | "
        f"{s['max_ratio']}x | {'met' if s['goal_max_2x'] else 'missed'} | {'yes' if result.own_traces else 'NO'} |",
        "", "A user's ratio is their time to the result with all users at once over the median of their "
        "question's times alone. The machine's cores may be shared with other work"
        + (f" (hypervisor steal {steal}%)" if steal is not None else "") + ", so the figures are indicative."])
