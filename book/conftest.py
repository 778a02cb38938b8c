"""nbval over the chapters: outputs made on another kind of CPU are compared within tolerance
(cpbook.agreement), here so that it holds however pytest is pointed at the chapters."""
from cpbook.agreement import patch_nbval


def pytest_configure(config):
    patch_nbval()
