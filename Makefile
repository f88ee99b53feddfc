PYTHON ?= python
SOURCES = fcn tests bench train.py evaluate.py predict.py demo.py tune.py serve.py

.PHONY: install lint format verify_format run_tests test_quick pre_push_test demo demo_web

install:
	$(PYTHON) -m pip install -r requirements.dev.txt

lint:
	$(PYTHON) -m ruff check $(SOURCES)
	lint-imports  # the layers contract in pyproject.toml (docs/development.md)

format:
	$(PYTHON) -m ruff check --select I --fix $(SOURCES)
	$(PYTHON) -m ruff format $(SOURCES)

verify_format:
	$(PYTHON) -m ruff format --check $(SOURCES)
	$(PYTHON) -m ruff check --select I $(SOURCES)

run_tests:
	$(PYTHON) -m pytest --durations=20  # the 20 slowest tests listed last: CI keeps under 20 minutes

# The inner loop: every test but those marked slow (end to end, more than ~3 s each); run_tests runs them all.
test_quick:
	$(PYTHON) -m pytest -m "not slow" --durations=10

pre_push_test: verify_format lint run_tests

# The CPU demo: toy data (generated once), FCN-8s on ResNet-18 from scratch, evaluation, predictions.
# training.resume=auto: a second make demo goes on from runs/toy (finished: nothing to train) instead
# of being refused for writing over it.
demo:
	$(PYTHON) -m fcn.data.toy --root data/toy
	$(PYTHON) train.py --config predefined_configs/toy.yml training.resume=auto
	$(PYTHON) evaluate.py --checkpoint runs/toy/checkpoints/best.pt --output runs/toy/eval.json
	$(PYTHON) predict.py --checkpoint runs/toy/checkpoints/best.pt --input data/toy/JPEGImages/val_0000[0-3].jpg --output runs/toy/predictions

# The web demo of the toy checkpoint (after make demo), on http://127.0.0.1:7860/; needs requirements.demo.txt.
demo_web:
	$(PYTHON) demo.py --checkpoint runs/toy/checkpoints/best.pt
