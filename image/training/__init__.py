"""How the default image model was made: the tokenizer, GPT and classifier training scripts and the model card
script. Nothing at run time imports this package."""
