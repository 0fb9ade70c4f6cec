"""Tests of the snapshot plugin (a package, so its test module names stay unique)."""
