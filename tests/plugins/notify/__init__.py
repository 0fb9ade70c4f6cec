"""Tests of the notify plugin (a package, so its module names cannot clash with other plugins')."""
