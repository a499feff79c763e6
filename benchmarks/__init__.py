"""The benchmark harness of issue 4: in-process latency, HTTP load with wrk, peers, results and the README table.

``python -m benchmarks.run`` measures and writes a results folder; ``python -m benchmarks.readme`` turns the latest
ones into the README's performance section. The modules, in the order a run uses them:

- ``plan``: how long and hard a run measures (``Mode``) and which servers it starts, with which endpoints.
- ``machine``: what the numbers were measured on (CPU, kernel, library versions, registry artifacts).
- ``inprocess``: in-process latency of every predictor, without HTTP.
- ``asgi``: in-process latency of ``/predict`` through the whole app, variants in turns: with and without the guard.
- ``servers``: how each server under load is started (the ceiling, the bare FastAPI route, the tutorial baseline,
  ours).
- ``guard``: the run's API key and keys file, the guarded servers (``ours-guard`` of the guard's HTTP A/B, and
  ``ours-enabled``: keys, limits and the payload log), and the guard's HTTP A/B.
- ``peers``: MLServer as a peer: its venv, its model repository for our artifacts, how it is started.
- ``processes``: start a server process, wait until it is ready, read its memory, stop it.
- ``client``: one HTTP request on a fresh connection (readiness polls, answer checks, probes).
- ``endpoints``: the request bodies and the routes under load, with what a good answer holds.
- ``probes``: what a user of ours can do, tried on the peer.
- ``load``: closed-loop HTTP load with wrk and the harness's Lua script (optionally counting every status apart).
- ``collector``: load each planned server's endpoints and collect the rows of results.json.
- ``overload``: one worker at concurrency 512, shedding on and off: admitted and shed answers, a liveness probe.
- ``monitoring``: monitoring's cost per served row in-process (``Monitor`` alone, and ``/predict`` through the app
  with it as served, inactive and off), and ``GET /metrics`` of the real server with two workers.
- ``ratios``, ``targets``, ``tables``, ``report``, ``figures``: results.json's ratios, the targets (issue 4's, the
  guard's and monitoring's), Markdown tables, results.md and the PNG figures.
- ``readme``: the README's performance section.
- ``apps``: the reference servers (the ceiling, the bare FastAPI route and the tutorial baseline).
"""

from pathlib import Path

REPOSITORY = Path(__file__).resolve().parent.parent
RESULTS_DIR = REPOSITORY / "benchmarks" / "results"
