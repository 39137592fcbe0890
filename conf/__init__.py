"""The shipped configs. A wheel installs this folder as the package `mascompare.conf`, from which Hydra composes
(`pkg://mascompare.conf`); see mascompare/config.py."""
