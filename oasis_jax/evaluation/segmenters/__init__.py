"""The paper's mIoU segmenters (DRN-D-105, UperNet-101, DeepLab-v2) in Flax."""
