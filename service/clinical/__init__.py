"""Clinical reading of FHIR data: dates, codes, quantities, medication classes, and the facts."""
