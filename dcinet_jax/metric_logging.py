"""Where metrics go: TensorBoard scalars and a console progress bar, on process 0 only."""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Mapping

import jax


class MetricLogger:
    """TensorBoard (tensorboardX) scalars plus a tqdm bar showing loss, examples/s and ETA."""

    def __init__(self, workdir: str | Path, *, total_steps: int, initial_step: int,
                 progress: bool = True):
        self.enabled = jax.process_index() == 0
        self._writer = self._bar = None
        if not self.enabled:
            return
        from tensorboardX import SummaryWriter
        self._writer = SummaryWriter(str(Path(workdir) / 'tensorboard'))
        if progress:
            from tqdm.auto import tqdm
            self._bar = tqdm(total=total_steps, initial=initial_step, unit='step',
                             dynamic_ncols=True, desc='train')
        self._last_step, self._last_time = initial_step, time.time()

    def scalars(self, step: int, values: Mapping[str, float], prefix: str = '') -> None:
        if not self.enabled:
            return
        for k, v in values.items():
            if v is not None and math.isfinite(float(v)):
                self._writer.add_scalar(f'{prefix}{k}', float(v), step)
        self._writer.flush()

    def progress(self, step: int, loss: float, examples_per_sec: float) -> None:
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.update(step - self._bar.n)
            self._bar.set_postfix(loss=f'{loss:.4f}', ex_s=f'{examples_per_sec:.1f}')
        else:
            logging.info('step %d loss %.4f %.1f examples/s', step, loss, examples_per_sec)

    def write(self, message: str) -> None:
        """Prints a line without breaking the progress bar."""
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.write(message)
        else:
            print(message, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        if self._writer is not None:
            self._writer.close()
