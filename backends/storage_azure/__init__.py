"""Internal storage in Azure Blob Storage, on azure-storage-blob's aio client (the
``azure`` extra)."""

from backends.storage_azure.storage import AzureStorage

__all__ = ["AzureStorage"]
