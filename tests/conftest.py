import csv
import os
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
DATA = pathlib.Path(__file__).resolve().parent / "data"
SHARED = ROOT.parent / "shared"


def read_csv(path):
    with open(path) as f:
        return list(csv.DictReader(line for line in f if not line.startswith("#")))


@pytest.fixture(scope="session")
def pycls_zoo_rows():
    return read_csv(DATA / "pycls_zoo.csv")


@pytest.fixture(scope="session")
def pycls_scaled_rows():
    return read_csv(DATA / "pycls_scaled.csv")


def pytest_configure(config):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
