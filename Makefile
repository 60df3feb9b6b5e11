# sharded-dataset-operator: everything runs from here. `make help` lists the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help
VENV ?= .venv
PY := $(VENV)/bin/python
ENV = eval "$$(hack/cluster.sh env)"

.PHONY: help
help: ## this list
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-16s %s\n", $$1, $$2}'

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[dev,bench,train]'
	touch $@

.PHONY: venv
venv: $(VENV)/.installed ## Python virtualenv with the package and dev tools

.PHONY: cluster-up cluster-down cluster-status cluster-env
cluster-up: ## start the local Kubernetes + AIS cluster (builds and caches everything on first run)
	hack/cluster.sh up
cluster-down: ## stop the local cluster and remove its state
	hack/cluster.sh down
cluster-status: ## health of every cluster component
	hack/cluster.sh status
cluster-env: ## shell exports: eval "$$(make -s cluster-env)"
	@hack/cluster.sh env

.PHONY: image deploy undeploy
image: ## build the project image (buildah) and import it into the local cluster
	hack/build-images.sh project transforms etl
	hack/cluster.sh load-images

deploy: image ## build, import and install/upgrade the CRD and the operator into the current cluster
	$(ENV); kubectl apply --server-side --force-conflicts -k manifests/
	@# the local cluster has no registry: user transform images are imported, never pulled (chart default: Always);
	@# its locally built AIS ETL image may run as an AIS ETL (chart default: none)
	$(ENV); kubectl -n sharded-dataset-operator set env deployment/sharded-dataset-operator SDS_USER_IMAGE_PULL_POLICY=IfNotPresent SDS_ETL_IMAGES=localhost/sdo-etl:
	$(ENV); kubectl -n sharded-dataset-operator rollout restart deployment/sharded-dataset-operator
	$(ENV); kubectl -n sharded-dataset-operator rollout status deployment/sharded-dataset-operator --timeout=180s

undeploy: ## remove the operator (the CRD and the datasets stay)
	$(ENV); kubectl delete --ignore-not-found -f manifests/operator.yaml

.PHONY: manifests
manifests: venv ## regenerate manifests/operator.yaml from the Helm chart and the values table in docs/install.md
	hack/render-manifests.sh
	$(PY) hack/values-table.py --update docs/install.md
	$(PY) hack/values-table.py --update README.md

.PHONY: chart-lint
chart-lint: ## helm lint the chart
	. hack/lib/common.sh; [[ -x $$HELM_BIN/helm ]] || hack/build-binaries.sh helm; \
	  $$HELM_BIN/helm lint --strict charts/sharded-dataset-operator

.PHONY: demo
demo: venv cluster-up deploy ## the main job: cluster + operator + example dataset, converted, shuffled, verified
	$(ENV); $(PY) examples/run_demo.py $(DEMO_ARGS)

.PHONY: lint test test-unit test-e2e
# The tests also bring up the AuthN-enabled AIS beside the plain one (the tenancy tests run on it).
test test-e2e: export AIS_AUTH := 1
lint: venv ## ruff + mypy --strict
	$(VENV)/bin/ruff check operator etl tools tests bench examples
	$(VENV)/bin/ruff format --check operator etl tools tests bench examples
	$(VENV)/bin/mypy

test-unit: venv ## fast tests of the pure logic
	$(VENV)/bin/pytest tests/unit -q

test-e2e: venv cluster-up deploy ## end-to-end tests on the local cluster
	$(ENV); SDS_E2E=1 SDS_REQUIRE_HELM=1 SDS_REQUIRE_LUA=1 SDS_REQUIRE_AUTH=1 $(VENV)/bin/pytest tests/e2e -v

test: venv cluster-up deploy ## everything: lint, unit and end-to-end tests (what CI runs)
	$(MAKE) lint
	$(ENV); SDS_E2E=1 SDS_REQUIRE_HELM=1 SDS_REQUIRE_LUA=1 SDS_REQUIRE_AUTH=1 $(VENV)/bin/pytest tests -v --durations=15

.PHONY: bench
bench: venv cluster-up deploy ## benchmark (bench/README.md); writes bench/results/latest.json
	$(ENV); $(PY) bench/run.py $(BENCH_ARGS)

.PHONY: bench-scale
bench-scale: venv cluster-up deploy ## growth benchmark at three dataset sizes (bench/README.md); writes bench/results/scale.json
	$(ENV); $(PY) bench/scale.py $(BENCH_ARGS)

.PHONY: bench-etl
bench-etl: venv cluster-up deploy ## the same resize in the converter and by AIS ETL, at two sizes (bench/README.md); writes bench/results/etl.json
	$(ENV); $(PY) bench/etl.py $(BENCH_ARGS)

.PHONY: bench-tables
bench-tables: venv ## planner memory and time with a metadata table of 10k, 100k and 1M rows (no cluster); writes bench/results/tables.json
	$(PY) bench/tables.py $(BENCH_ARGS)

.PHONY: bench-s3
bench-s3: venv cluster-up deploy ## S3 sources read cold, prefetched and warm at two sizes, and a scheduled check per 100k objects (bench/README.md); writes bench/results/s3.json
	$(ENV); $(PY) bench/s3.py $(BENCH_ARGS)

.PHONY: bench-imagenet
bench-imagenet: venv cluster-up deploy ## ImageNet-1k's class folders at 1/16, 1/4 and full count (1.33 M images), apply -> Ready per phase, memory, disk, shard sizes, +1 % refresh (--quick: minutes); writes bench/results/imagenet.json
	$(ENV); $(PY) bench/imagenet.py $(BENCH_ARGS)

.PHONY: bench-peers
bench-peers: venv cluster-up deploy ## the same ImageNet-shaped data through the seed's script, the operator, LitData (local disk and S3) and AIS's archive jobs (--quick: minutes); writes bench/results/peers.json
	$(ENV); $(PY) bench/peers.py $(BENCH_ARGS)

.PHONY: bench-refresh
bench-refresh: venv cluster-up deploy ## a refresh after +1 % samples vs the full run, at 200k samples (bench/README.md); writes bench/results/refresh.json
	$(ENV); $(PY) bench/refresh.py $(BENCH_ARGS)
