"""Evaluation: PSNR, SSIM, LPIPS, FID, runtime and figures (`rsisr evaluate`)."""
