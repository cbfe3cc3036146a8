# Two commands do all the set-up on a fresh machine:
#   make demo   - create .venv when missing, install, run the main job on built-in data (offline)
#   make test   - create .venv when missing, install with the test extras, run the test suite
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# Taken only where no torch is importable yet; an existing (e.g. CUDA) torch is kept.
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
DEMO_OUT ?= outputs/demo

.PHONY: demo test install system-deps clean

# Short fits + tests on generated data: MGIC-diffGCN on ModelNet-10-style meshes, then its Table-6
# row; MGIC-ResNet-56 on CIFAR-10-style images, then its Table-2 row.
demo: $(VENV)/.installed
	$(VENV)/bin/mgic-geo fit --config experiments/modelnet10/demo.yaml --trainer.default_root_dir $(DEMO_OUT)/modelnet10
	$(VENV)/bin/mgic-geo test --config experiments/modelnet10/demo.yaml --trainer.default_root_dir $(DEMO_OUT)/modelnet10 --ckpt_path $(DEMO_OUT)/modelnet10/checkpoints/last.ckpt
	$(VENV)/bin/mgic-geo table 6 --results $(DEMO_OUT)/modelnet10 --out $(DEMO_OUT)/table6
	$(VENV)/bin/mgic-geo fit --config experiments/cifar10/demo.yaml --trainer.default_root_dir $(DEMO_OUT)/cifar10
	$(VENV)/bin/mgic-geo test --config experiments/cifar10/demo.yaml --trainer.default_root_dir $(DEMO_OUT)/cifar10 --ckpt_path $(DEMO_OUT)/cifar10/checkpoints/last.ckpt
	$(VENV)/bin/mgic-geo table 2 --results $(DEMO_OUT)/cifar10 --out $(DEMO_OUT)/table2

test: $(VENV)/.installed-test
	$(PY) -m pytest

install: $(VENV)/.installed

# A torch that the system interpreter already has (a CUDA build, say) is reused, not reinstalled.
$(PY):
	@if $(PYTHON) -c "import torch" >/dev/null 2>&1; then \
		echo "mgic_geo: $(PYTHON) already has torch; $(VENV) will see it (--system-site-packages)"; \
		$(PYTHON) -m venv --system-site-packages $(VENV); \
	else \
		$(PYTHON) -m venv $(VENV); \
	fi

# open3d needs Debian's libusb-1.0-0 to import.
system-deps:
	@if ldconfig -p 2>/dev/null | grep -q 'libusb-1.0.so.0'; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "mgic_geo: installing libusb-1.0-0 for open3d"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libusb-1.0-0 >/dev/null; \
	else \
		echo "mgic_geo: warning: libusb-1.0.so.0 is missing, so open3d will not import; install libusb-1.0-0 (Debian/Ubuntu) as root"; \
	fi

$(VENV)/.torch: | $(PY)
	@if $(PY) -c "import torch" >/dev/null 2>&1; then \
		echo "mgic_geo: keeping torch $$($(PY) -c 'import torch; print(torch.__version__)')"; \
	else \
		echo "mgic_geo: no torch found, installing $(TORCH_SPEC)"; \
		$(PIP) install $(TORCH_SPEC); \
	fi
	$(PY) -c "import torch; print('torch==' + torch.__version__.split('+')[0])" > $@

$(VENV)/.installed: pyproject.toml $(VENV)/.torch | system-deps
	$(PIP) install -c $(VENV)/.torch -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml $(VENV)/.torch | system-deps
	$(PIP) install -c $(VENV)/.torch -e '.[test]'
	touch $(VENV)/.installed $@

clean:
	rm -rf $(VENV) outputs .pytest_cache
