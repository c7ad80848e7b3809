"""The ablation cells of the paper on ADE20K (OASIS / SPADE D, +- VGG)."""
