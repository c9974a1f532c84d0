# Packages and man pages from this tree (not from git: uncommitted files are included;
# .venv, dist, build output and caches are not). As root on Debian after tools/setup.sh
# (check-packages and systemtest run it themselves).
# Artifacts go into $(DIST); builds run in temporary directories under /tmp, so nothing
# else in the checkout or on the machine is written.
#
#   make wheel          dist/ec2_net_utils-VERSION-py3-none-any.whl
#   make rpm            dist/ec2-net-utils-VERSION-1.noarch.rpm (systemd)
#   make rpm-el6        dist/ec2-net-utils-VERSION-1.el6.noarch.rpm (upstart, RHEL 6)
#   make deb            dist/ec2-net-utils_VERSION_all.deb (+ .changes, .dsc, source)
#   make man            dist/man/ec2net.8, ec2net.toml.5 (and ec2ifup.8, ec2ifdown.8,
#                       ec2ifscan.8, which point to ec2net.8)
#   make packages       wheel, rpm and deb
#   make check-packages build all of them and check their contents (tests/package)
#   make systemtest     the QEMU system tier
#   make bench          the benchmark suite: docs/performance.md, docs/perf/ (SYSTEM=1: with
#                       the QEMU side-by-side of benchmarks/bench_system.py)
#   make clean          remove dist/

NAME := ec2-net-utils
VERSION := $(shell sed -n 's/^version = "\(.*\)"$$/\1/p' pyproject.toml)
DIST ?= dist
PYTHON ?= /usr/bin/python3
TARBALL := $(DIST)/$(NAME)-$(VERSION).tar.gz
RPM_DEFINES ?=
# rpm installed as a Debian package: its database (in $HOME) is empty, so build
# dependencies cannot be checked, and it is kept in the build directory instead.
RPM_ON_DPKG := $(shell dpkg-query -W -f='$${Status}' rpm 2>/dev/null | grep -q 'ok installed' && echo yes)
# Reproducible archives: timestamps from the changelog, not from the clock.
ifndef SOURCE_DATE_EPOCH
SOURCE_DATE_EPOCH := $(shell date -d "$$(sed -n 's/^ -- .*>  //p' debian/changelog | head -n1)" +%s)
endif
export SOURCE_DATE_EPOCH
export PYTHONDONTWRITEBYTECODE := 1
# Package builds use the distribution's tools and Python only (no pyenv, venv or
# /usr/local shadowing python3).
CLEAN_ENV := env -u PYTHONPATH -u VIRTUAL_ENV PATH=/usr/sbin:/usr/bin:/sbin:/bin

TAR_EXCLUDES := --exclude=./.git --exclude='./.venv*' --exclude=./dist --exclude=./build \
	--exclude=./.cache --exclude=./.benchmarks --exclude=./.pybuild --exclude=./debian/man \
	--exclude=__pycache__ --exclude='*.pyc' --exclude='*.egg-info' --exclude=.mypy_cache \
	--exclude=.ruff_cache --exclude=.pytest_cache --exclude='./$(patsubst ./%,%,$(DIST))'

.PHONY: all tarball wheel rpm rpm-el6 deb man packages check-packages systemtest bench clean

all: packages

# The source archive every build starts from (also rpmbuild's Source0).
tarball:
	@test -n "$(VERSION)" || { echo "no version in pyproject.toml" >&2; exit 1; }
	mkdir -p $(DIST)
	tmp=$(TARBALL).$$$$.tmp; tar --create --gzip --file=$$tmp --sort=name --owner=0 \
		--group=0 --numeric-owner --mtime=@$(SOURCE_DATE_EPOCH) $(TAR_EXCLUDES) \
		--transform='s,^\.,$(NAME)-$(VERSION),' . && mv $$tmp $(TARBALL)

wheel: tarball
	set -e; work=$$(mktemp -d /tmp/ec2net-wheel.XXXXXX); trap 'rm -rf "$$work"' EXIT; \
	tar -xzf $(TARBALL) -C "$$work"; \
	$(CLEAN_ENV) $(PYTHON) -m build --wheel --no-isolation --outdir $(abspath $(DIST)) \
		"$$work/$(NAME)-$(VERSION)"

rpm: tarball
	set -e; work=$$(mktemp -d /tmp/ec2net-rpm.XXXXXX); trap 'rm -rf "$$work"' EXIT; \
	mkdir -p "$$work/tmp"; \
	$(CLEAN_ENV) rpmbuild -bb $(if $(RPM_ON_DPKG),--nodeps --dbpath "$$work/rpmdb") \
		--define "_topdir $$work" --define "_tmppath $$work/tmp" \
		--define "_sourcedir $(abspath $(DIST))" --define "_rpmdir $(abspath $(DIST))" \
		--define "_build_name_fmt %{NAME}-%{VERSION}-%{RELEASE}.%{ARCH}.rpm" \
		$(RPM_DEFINES) packaging/rpm/$(NAME).spec

rpm-el6:
	$(MAKE) rpm RPM_DEFINES="--define 'rhel 6' --define 'dist .el6'"

deb: tarball
	set -e; work=$$(mktemp -d /tmp/ec2net-deb.XXXXXX); trap 'rm -rf "$$work"' EXIT; \
	tar -xzf $(TARBALL) -C "$$work"; \
	(cd "$$work/$(NAME)-$(VERSION)" && $(CLEAN_ENV) dpkg-buildpackage -us -uc --no-sign); \
	cp "$$work"/$(NAME)_$(VERSION)* $(abspath $(DIST))/

man:
	PYTHONPATH=src $(PYTHON) -m ec2net.manpage --out $(DIST)/man

packages: wheel rpm deb

# Both run pytest from .venv: tools/setup.sh makes it (and installs the Debian packages)
# on a fresh checkout, as tools/test does; on a set-up machine it installs nothing.
check-packages:
	tools/setup.sh
	.venv/bin/python -m pytest -q -p no:cacheprovider -m package tests/package

systemtest:
	tools/setup.sh
	EC2NET_SYSTEST_SWITCH= .venv/bin/python -m pytest -q -p no:cacheprovider -s -m system tests/system

bench:
	tools/setup.sh
	.venv/bin/python benchmarks/suite.py $(if $(SYSTEM),--system)

clean:
	rm -rf $(DIST)
