"""Helpers the tests import (``from support.fake_registry import FakeRegistry``); no tests here."""
