"""Entry point: compose the configuration with Hydra, then run the lifecycle it describes.

python main.py storage=local model=smollm2 mode=all
"""

import hydra
from omegaconf import DictConfig

from lifecycle.cli import execute  # registers the config's schema and resolvers (in Ray's workers too)


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> float | None:
    return execute(cfg)


if __name__ == "__main__":
    main()
