"""Security under test: a PKI of the package's own, and a foreign one.

The PKI is generated into a temporary folder by the same code as the local stack's
(`scripts/localstack/pki.py`); `foreign_pki` is a second, unrelated authority whose
certificates and tokens must be refused.
"""

from __future__ import annotations

import pytest

from scripts.localstack.pki import Pki, ensure_pki


@pytest.fixture(scope="package")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return ensure_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="package")
def foreign_pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return ensure_pki(tmp_path_factory.mktemp("foreign-pki"))
