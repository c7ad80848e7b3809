"""`python -m oasis_jax.demo`: the gradio page."""

from absl import app

from oasis_jax import demo

if __name__ == '__main__':
  demo.define_flags()
  app.run(demo.main)
