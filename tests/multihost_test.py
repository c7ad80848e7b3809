"""Two processes (jax.distributed over 127.0.0.1) train like one process.

The real entry point, `python -m oasis_jax.main` (through
tests/multihost_worker.py, which also records the examples each process
fed), runs the tiny config with a global batch of 4 on 2 processes x 2
forced CPU devices: 2 steps and a checkpoint, then a second launch restores
it and trains to step 4. A single process on 4 forced devices trains the same
4 steps in one go. They must agree.
"""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

from absl import logging
from absl.testing import absltest
import jax
import numpy as np
from tensorboard.backend.event_processing import event_accumulator

from configs import tiny
from oasis_jax.training import checkpointing
from oasis_jax.training import train_state

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_WORKER = os.path.join(_REPO, 'tests', 'multihost_worker.py')
_TIMEOUT_S = 300  # Per launch (both processes); a hang fails, not blocks.
_NUM_PROCESSES = 2
_STEPS = 4
_LOSSES = ('d/fake', 'd/labelmix', 'd/real', 'g/adv')


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def _env(devices: int, record: str, **extra) -> dict[str, str]:
  env = {k: v for k, v in os.environ.items()
         if not k.startswith(('JAX_COORDINATOR', 'JAX_NUM_PROCESSES',
                              'JAX_PROCESS_ID', 'SLURM_'))}
  env.update(XLA_FLAGS=f'--xla_force_host_platform_device_count={devices}',
             JAX_PLATFORMS='cpu', PYTHONPATH=_REPO,
             OASIS_MULTIHOST_RECORD=record, **extra)
  return env


def _launch(workdir: str, num_steps: int, num_processes: int,
            devices_per_process: int) -> list[str]:
  """Runs the entry point on `num_processes` processes; their stderr logs."""
  command = [sys.executable, _WORKER,
             f'--config={os.path.join(_REPO, "configs", "tiny.py")}',
             f'--workdir={workdir}', f'--config.train.num_steps={num_steps}',
             '--config.train.log_every_steps=1',  # Every step's losses.
             '--config.train.checkpoint_every_steps=2',
             '--config.train.sample_every_steps=0']  # Only at the end.
  record = os.path.join(workdir, 'fed')
  port = _free_port()
  procs, logs = [], []
  for i in range(num_processes):
    extra = {}
    if num_processes > 1:
      extra = dict(JAX_COORDINATOR_ADDRESS=f'127.0.0.1:{port}',
                   JAX_NUM_PROCESSES=str(num_processes),
                   JAX_PROCESS_ID=str(i),
                   # No persistent compilation cache: on CPU its keys differ
                   # by process (the topology fingerprint) and only process
                   # 0 writes, so process 0 would load the train step while
                   # process 1 compiles it; if process 1 reaches the first
                   # cross-process collective over 30 s later, gloo's context
                   # set-up times out (DEADLINE_EXCEEDED ... cpu:gloo/...).
                   JAX_ENABLE_COMPILATION_CACHE='false')
    log = tempfile.TemporaryFile(mode='w+')  # No pipe to fill up.
    logs.append(log)
    procs.append(subprocess.Popen(
        command, cwd=_REPO, stdout=log, stderr=subprocess.STDOUT, text=True,
        env=_env(devices_per_process, record, **extra),
        start_new_session=True))
  deadline = time.monotonic() + _TIMEOUT_S
  try:
    for proc in procs:
      proc.wait(timeout=max(1.0, deadline - time.monotonic()))
  except subprocess.TimeoutExpired:
    pass
  finally:
    hung = [proc for proc in procs if proc.poll() is None]
    for proc in hung:  # Where it hangs: the worker prints its stacks.
      proc.send_signal(signal.SIGUSR1)
    if hung:
      time.sleep(2)
    for proc in hung:  # A failed peer leaves the other one waiting.
      os.killpg(proc.pid, signal.SIGKILL)
      proc.wait()
  outputs = []
  for log in logs:
    log.seek(0)
    outputs.append(log.read())
    log.close()
  for i, (proc, out) in enumerate(zip(procs, outputs)):
    if proc.returncode != 0:
      raise AssertionError(
          f'process {i} of {num_processes} ({num_steps} steps) exited with '
          f'{proc.returncode}:\n' + '\n'.join(
              f'--- process {j} ---\n{o[-4000:]}'
              for j, o in enumerate(outputs)))
  return outputs


def _losses(workdir: str) -> dict[str, list[float]]:
  """{loss: [value at step 1, ..., _STEPS]} from the chief's TensorBoard."""
  events = event_accumulator.EventAccumulator(
      os.path.join(workdir, 'tensorboard'))
  events.Reload()
  out = {}
  for key in _LOSSES:
    scalars = events.Scalars(key)
    assert [e.step for e in scalars] == list(range(1, _STEPS + 1)), scalars
    out[key] = [e.value for e in scalars]
  return out


def _final_state(workdir: str, config):
  """The step-_STEPS checkpoint, restored onto one local device."""
  abstract = train_state.abstract_train_state(config)
  device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  manager = checkpointing.create_manager(workdir)
  state = checkpointing.restore(manager, _STEPS, abstract,
                                jax.tree.map(lambda _: device, abstract))
  return manager.all_steps(), jax.device_get(state)


def _fed(workdir: str, process: int) -> list[list[str]]:
  with open(os.path.join(workdir, 'fed', f'process_{process}.jsonl')) as f:
    return [json.loads(line) for line in f]


class MultiHostTest(absltest.TestCase):
  """2 processes x 2 devices, stopped and resumed == 1 process x 4 devices."""

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.root = tempfile.mkdtemp(prefix='oasis_multihost_')
    cls.multi = os.path.join(cls.root, 'multi')
    cls.single = os.path.join(cls.root, 'single')
    start = time.monotonic()
    cls.multi_logs = [_launch(cls.multi, 2, _NUM_PROCESSES, 2),
                      _launch(cls.multi, _STEPS, _NUM_PROCESSES, 2)]
    cls.single_logs = _launch(cls.single, _STEPS, 1, 4)
    logging.info('3 launches in %.0f s.', time.monotonic() - start)
    cls.config = tiny.get_config()

  @classmethod
  def tearDownClass(cls):
    shutil.rmtree(cls.root, ignore_errors=True)
    super().tearDownClass()

  def test_processes_see_the_global_layout_and_resume(self):
    first, second = self.multi_logs
    for i in range(_NUM_PROCESSES):
      self.assertIn(f'process {i} of 2; 2 local / 4 global devices',
                    first[i])
      self.assertIn('Resumed from the checkpoint of step 2.', second[i])
      self.assertNotIn('Resumed', first[i])
    self.assertIn('process 0 of 1; 4 local / 4 global devices',
                  self.single_logs[0])

  def test_processes_fed_disjoint_shards_of_the_single_process_batches(self):
    multi = [_fed(self.multi, i) for i in range(_NUM_PROCESSES)]
    single = _fed(self.single, 0)
    self.assertLen(single, _STEPS)
    for i in range(_NUM_PROCESSES):
      self.assertLen(multi[i], _STEPS)  # 2 steps per launch, in order.
    for step in range(_STEPS):
      shard0, shard1 = multi[0][step], multi[1][step]
      self.assertLen(shard0, 2)
      self.assertLen(shard1, 2)
      self.assertEmpty(set(shard0) & set(shard1), f'step {step + 1}')
      # Side by side, they are the single process's batch, row for row.
      self.assertEqual(shard0 + shard1, single[step])
    # 4 steps x 4 = the 16 examples of the tiny split: one epoch, once each.
    self.assertLen(set(sum(multi[0] + multi[1], [])), 16)

  def test_checkpoint_holds_one_iterator_state_per_process(self):
    for step in (2, _STEPS):
      folder = os.path.join(self.multi, 'checkpoints', str(step),
                            'data_iter')
      self.assertCountEqual(
          [f for f in os.listdir(folder) if f.endswith('.json')],
          [f'process_{i}-of-2.json' for i in range(_NUM_PROCESSES)])
      for i in range(_NUM_PROCESSES):
        with open(os.path.join(folder, f'process_{i}-of-2.json')) as f:
          # Each process consumed `step` batches of its own shard.
          self.assertEqual(json.load(f), {'next_index': step})

  def test_two_processes_match_one_process(self):
    """Losses and parameters agree within reduction-order tolerances.

    Both runs start from the same parameters and feed the same global batches
    row for row, so only the order of the cross-device reductions differs.
    Step-1 losses: rtol 1e-5. Later steps follow Adam updates (b1 = 0), about
    lr * sign(gradient), which turn reduction-order noise in near-zero
    gradients into parameter differences of up to a few lr per step; the
    step-2..4 losses get rtol 1e-4 and every parameter 2 * (lr_g + lr_d) * 4
    (= 4e-3). As that bound alone would also pass for wrong data, at least
    99% of each network's parameters must agree to 1e-5. Measured on a CPU:
    losses within 7e-7 relative at all 4 steps; parameters max 3.1e-4
    (generator) / 2.2e-6 (discriminator), 0.5% / 0.01% of them beyond 1e-6.
    """
    multi, single = _losses(self.multi), _losses(self.single)
    for key in _LOSSES:
      np.testing.assert_allclose(multi[key][0], single[key][0], rtol=1e-5,
                                 atol=1e-7, err_msg=key)
      np.testing.assert_allclose(multi[key], single[key], rtol=1e-4,
                                 atol=1e-6, err_msg=key)
    multi_steps, multi_state = _final_state(self.multi, self.config)
    single_steps, single_state = _final_state(self.single, self.config)
    self.assertEqual(multi_steps, [2, _STEPS])
    self.assertEqual(single_steps, [2, _STEPS])
    self.assertEqual(int(multi_state.step), _STEPS)
    atol = 2 * (self.config.optim.lr_g + self.config.optim.lr_d) * _STEPS
    for net in ('generator', 'discriminator'):
      a = jax.tree.leaves(getattr(single_state, net).params)
      b = jax.tree.leaves(getattr(multi_state, net).params)
      for x, y in zip(a, b, strict=True):
        np.testing.assert_allclose(y, x, rtol=0, atol=atol, err_msg=net)
      diff = np.concatenate([np.abs(x - y).ravel() for x, y in zip(a, b)])
      self.assertGreaterEqual(np.mean(diff <= 1e-5), 0.99, net)

if __name__ == '__main__':
  absltest.main()
