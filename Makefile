# The two commands of the README. Each sets itself up (a virtual environment in .venv) first.
# DEMO_ARGS passes extra flags to `bfn demo`, e.g. `make demo DEMO_ARGS="--steps 200"` for a short run (CI does).
.PHONY: demo test lint setup

DEMO_ARGS ?=

demo:
	bash scripts/setup.sh metrics
	.venv/bin/bfn demo --out runs/demo $(DEMO_ARGS)

test:
	bash scripts/setup.sh dev
	.venv/bin/ruff check src tests benchmarks
	.venv/bin/ruff format --check src tests benchmarks
	OMP_NUM_THREADS=1 .venv/bin/python -m pytest -n 2 -p no:cacheprovider

lint:
	.venv/bin/ruff check --fix src tests benchmarks
	.venv/bin/ruff format src tests benchmarks
