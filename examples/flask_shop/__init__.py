"""A Flask shop whose order view creates the order row and triggers its run in one transaction."""
