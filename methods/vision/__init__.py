"""Methods that apply only to a ViT: VPT (``vpt``) and the Houlsby and AdaptFormer bottleneck
adapters (``bottleneck``); ``placement`` says where they attach and refuses other models
before any cell runs."""
