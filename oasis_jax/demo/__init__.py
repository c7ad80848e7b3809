"""An interactive demo: paint a label map, get images, resample one region.

  python -m oasis_jax.demo (--checkpoint=DIR | --workdir=DIR [--step=best])
      [--port=N] [--host=ADDRESS] [--share] [--class_names=FILE]

A gradio page (`pip install -e ".[demo]"`) over a trained generator:

  1. a label map: a bundled example (oasis_jax/examples, or the data set's
     validation maps with --workdir), an uploaded label PNG (class ids or
     the model's palette colours), then painted over with a brush whose
     colour is picked by class name, on a canvas of the model's size;
  2. N samples of it (the seed is shown and can be set), beside the label
     map in the palette's colours;
  3. local editing (the paper's Sec. 3.4): new noise inside a region, a
     painted mask or the pixels of chosen classes, the old noise elsewhere;
  4. a slider between two samples (spherical interpolation of their noise);
  5. the images as PNG files to download.

From Python (a notebook cell; inline on Colab and Jupyter):

  from oasis_jax.demo import layout
  layout.launch(synth)               # synth: a synthesis.Synthesizer

The modules, by job: `adapter` (every call into the Synthesizer and the
label reader), `labels` (example label maps, class names), `strokes` (the
painted canvas as class ids or a mask), `app` (the state and callbacks:
plain functions of numpy arrays and strings, tested without a browser),
`layout` (the gradio page, its CSS and JS, launch), `__main__` (the command
line).
"""
