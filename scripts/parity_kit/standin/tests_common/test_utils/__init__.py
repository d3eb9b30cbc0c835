"""``tests_common.test_utils``: the modules the upstream operator tests import, and nothing else."""
