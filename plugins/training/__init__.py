"""What the recoveries that train share: ``lora`` and ``distill`` train a sliced model with transformers' ``Trainer``.

- :mod:`.corpus`: the training text cut into sequences, with a held-out tail and its report;
- :mod:`.trainer`: ``Trainer``'s settings, a progress bar in place of its printed logs, and the curves it leaves;
- :mod:`.checkpoints`: the resumable state under the run's ``checkpoints/<plugin>/``;
- :mod:`.adapters`: peft's LoRA adapters put on a model and merged back into its weights.

Not a plugin: the plugins that train import it, so each mechanism has one home whichever of them runs.
"""
