"""facerestore: restore the faces in whole albums of photos, changing nothing else."""

__version__ = "0.1.0"
