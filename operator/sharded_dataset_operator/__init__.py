"""sharded-dataset-operator: raw dataset -> WebDataset shards in AIStore -> dSort shuffle -> Ready."""

__version__ = "0.1.0"
