"""Every option of a config group, composed the way Hydra composes the chosen one.

The experiment stage registers every template in ``conf/prompt/``, not only the one in use. Inside a Hydra app (or
after ``initialize_config_dir``) the options come from Hydra's own config repository; elsewhere only the chosen
option is known, and that is what is returned.
"""

from __future__ import annotations

import logging

from omegaconf import DictConfig

log = logging.getLogger(__name__)


def group_options(cfg: DictConfig, group: str) -> dict[str, DictConfig]:
    from hydra import compose
    from hydra.core.global_hydra import GlobalHydra

    chosen = {"_chosen": cfg[group]}
    hydra = GlobalHydra.instance()
    if not hydra.is_initialized():
        return chosen
    options: dict[str, DictConfig] = {}
    for option in hydra.config_loader().get_group_options(group):
        try:
            options[option] = compose(config_name="config", overrides=[f"{group}={option}"])[group]
        except Exception as exc:  # one broken file must not hide the others; it is reported
            log.warning("skipping %s=%s: %s", group, option, exc)
    return options or chosen
