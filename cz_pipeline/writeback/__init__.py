"""Write-back: editable fields, pushed attributes and tasks from the application to the CRM."""
