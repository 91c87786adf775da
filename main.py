"""Entry point: compose the configuration with Hydra, then run the lifecycle it describes.

python main.py storage=local model=smollm2 mode=all
"""

import hydra
from omegaconf import DictConfig

from lifecycle.config import register_configs

register_configs()


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> int:
    from lifecycle.cli import execute

    return execute(cfg)


if __name__ == "__main__":
    main()
