"""The fast tier: in-process tests, no subprocess, no daemon (scripts/test.sh --fast)."""
