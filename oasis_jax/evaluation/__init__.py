"""Evaluation: one metric per module (FID, mIoU, LPIPS, MS-SSIM), evaluators."""
