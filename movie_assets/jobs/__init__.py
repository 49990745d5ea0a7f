"""Op jobs that are not asset materializations: restore from backup, the hyperparameter sweep."""
