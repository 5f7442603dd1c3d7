"""Cloud regions as candidate sites: region code -> the GeoNames city at (or nearest to) its published location.

Locations are the metro areas the providers publish for their regions (public region pages, late 2026);
a region whose town is not in GeoNames' cities over 15,000 people is placed at the nearest city that is
(e.g. GCP europe-west1 at St. Ghislain -> Mons, europe-west4 at Eemshaven -> Groningen, us-east1 at
Moncks Corner -> Charleston; Azure eastus at Boydton -> Richmond). Good enough for round trips of a few ms.
"""

from __future__ import annotations

AWS = {
    "us-east-1": "Ashburn", "us-east-2": "Columbus", "us-west-1": "San Jose", "us-west-2": "Portland",
    "ca-central-1": "Montréal", "ca-west-1": "Calgary", "mx-central-1": "Santiago de Querétaro",
    "sa-east-1": "São Paulo", "eu-west-1": "Dublin", "eu-west-2": "London", "eu-west-3": "Paris",
    "eu-central-1": "Frankfurt am Main", "eu-central-2": "Zürich", "eu-north-1": "Stockholm",
    "eu-south-1": "Milan", "eu-south-2": "Zaragoza", "il-central-1": "Tel Aviv", "me-south-1": "Manama",
    "me-central-1": "Dubai", "af-south-1": "Cape Town", "ap-south-1": "Mumbai", "ap-south-2": "Hyderabad",
    "ap-east-1": "Hong Kong", "ap-northeast-1": "Tokyo", "ap-northeast-2": "Seoul", "ap-northeast-3": "Osaka",
    "ap-southeast-1": "Singapore", "ap-southeast-2": "Sydney", "ap-southeast-3": "Jakarta",
    "ap-southeast-4": "Melbourne",
}

GCP = {
    "us-east4": "Ashburn", "us-east1": "Charleston", "us-central1": "Council Bluffs", "us-west1": "The Dalles",
    "us-west2": "Los Angeles", "us-west3": "Salt Lake City", "us-west4": "Las Vegas", "us-south1": "Dallas",
    "northamerica-northeast1": "Montréal", "northamerica-northeast2": "Toronto",
    "southamerica-east1": "São Paulo", "southamerica-west1": "Santiago", "europe-west1": "Mons",
    "europe-west2": "London", "europe-west3": "Frankfurt am Main", "europe-west4": "Groningen",
    "europe-west6": "Zürich", "europe-west8": "Milan", "europe-west9": "Paris", "europe-west10": "Berlin",
    "europe-west12": "Turin", "europe-southwest1": "Madrid", "europe-north1": "Hamina",
    "europe-central2": "Warsaw", "me-west1": "Tel Aviv", "me-central1": "Doha", "me-central2": "Dammam",
    "africa-south1": "Johannesburg", "asia-south1": "Mumbai", "asia-south2": "Delhi",
    "asia-southeast1": "Singapore", "asia-southeast2": "Jakarta", "asia-east1": "Changhua",
    "asia-east2": "Hong Kong", "asia-northeast1": "Tokyo", "asia-northeast2": "Osaka",
    "asia-northeast3": "Seoul", "australia-southeast1": "Sydney", "australia-southeast2": "Melbourne",
}

AZURE = {
    "eastus": "Richmond", "westus": "San Francisco", "westus2": "Seattle", "centralus": "Des Moines",
    "southcentralus": "San Antonio", "northcentralus": "Chicago", "canadacentral": "Toronto",
    "brazilsouth": "São Paulo", "northeurope": "Dublin", "westeurope": "Amsterdam", "uksouth": "London",
    "francecentral": "Paris", "germanywestcentral": "Frankfurt am Main", "swedencentral": "Gävle",
    "switzerlandnorth": "Zürich", "norwayeast": "Oslo", "polandcentral": "Warsaw", "italynorth": "Milan",
    "spaincentral": "Madrid", "uaenorth": "Dubai", "qatarcentral": "Doha", "israelcentral": "Tel Aviv",
    "southafricanorth": "Johannesburg", "centralindia": "Pune", "southindia": "Chennai",
    "eastasia": "Hong Kong", "southeastasia": "Singapore", "japaneast": "Tokyo", "japanwest": "Osaka",
    "koreacentral": "Seoul", "australiaeast": "Sydney", "australiasoutheast": "Melbourne",
}

PROVIDERS: dict[str, dict[str, str]] = {"aws": AWS, "gcp": GCP, "azure": AZURE}
