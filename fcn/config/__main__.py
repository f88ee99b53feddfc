"""python -m fcn.config > config.yml: print the documented default config."""

from fcn.config.documented import documented_yaml

print(documented_yaml(), end="")
