"""Evaluation: one metric per module (FID with Inception, mIoU, LPIPS, MS-SSIM) and its evaluator."""
