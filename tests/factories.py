import factory
from django.contrib.auth import get_user_model

from sabito_sync.models import Customer, Membership, SabitoMapping, Tenant


class TenantFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Tenant

    name = factory.Sequence(lambda n: f"Tenant {n}")
    slug = factory.Sequence(lambda n: f"tenant-{n}")


class SabitoMappingFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = SabitoMapping

    sabito_business_id = factory.Sequence(lambda n: f"biz-{n}")
    business_name = factory.Sequence(lambda n: f"Business {n}")
    tenant = factory.SubFactory(TenantFactory)


class CustomerFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Customer

    tenant = factory.SubFactory(TenantFactory)
    name = factory.Sequence(lambda n: f"Customer {n}")
    email = factory.Sequence(lambda n: f"customer{n}@example.com")


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = get_user_model()
        skip_postgeneration_save = True

    username = factory.Sequence(lambda n: f"user{n}")
    email = factory.Sequence(lambda n: f"user{n}@example.com")
    password = factory.PostGenerationMethodCall("set_password", "correct-horse-battery")


class MembershipFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Membership

    user = factory.SubFactory(UserFactory)
    tenant = factory.SubFactory(TenantFactory)
    role = Membership.Role.ADMIN


def sabito_record(n: int, **overrides) -> dict:
    """A Sabito customer record as the API sends it."""
    record = {
        "id": f"cust-{n}",
        "email": f"person{n}@example.com",
        "name": f"Person {n}",
        "phone": f"+1555000{n:04d}",
        "address": f"{n} Main St",
        "city": "Springfield",
        "state": "IL",
        "country": "USA",
        "sourceReferralId": f"ref-{n}",
        "sourceType": "referral",
    }
    record.update(overrides)
    return record
