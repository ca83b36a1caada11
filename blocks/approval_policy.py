"""`ApprovalPolicy`: who may approve a production release, and how they prove it."""

from __future__ import annotations

import binascii

from prefect.blocks.core import Block
from pydantic import ConfigDict, Field, SecretStr, field_validator, model_validator

from deliver.planning.approval import decode_secret


class ApprovalPolicy(Block):
    """Who may approve production releases; optional one-time codes prove who approved."""

    _block_type_name = "Approval Policy"
    _block_type_slug = "approval-policy"
    _description = "Approvers of production releases, self-approval, one-time codes and timeout."
    model_config = ConfigDict(hide_input_in_errors=True)  # errors never show a secret

    approvers: list[str] = Field(min_length=1, description="Names allowed to approve or reject.")
    allow_self_approval: bool = Field(
        default=False, description="Whether the requester may approve their own release."
    )
    totp_secrets: dict[str, SecretStr] = Field(
        default_factory=dict,
        description="Base32 TOTP secret per approver (RFC 6238); those approvers must give a code.",
    )
    require_codes: bool = Field(
        default=True,
        description="Every approver proves who they are with a one-time code, so each needs a "
        "TOTP secret here. Turn off only where a typed name is proof enough.",
    )
    timeout_s: float = Field(
        default=86400.0, gt=0, description="How long a release waits for approval (24 h)."
    )
    rollback_needs_approval: bool = Field(
        default=True,
        description="Whether a production rollback waits for an approval, as a release does "
        "(it can be given at once, with the same form).",
    )
    emergency_rollback: list[str] = Field(
        default_factory=list,
        description="People who may approve their own production rollback, in an emergency; "
        "each needs a TOTP secret here and gives a one-time code. It is recorded as theirs.",
    )

    @model_validator(mode="after")
    def _approvers_need_codes(self) -> ApprovalPolicy:
        without = [name for name in self.approvers if name not in self.totp_secrets]
        if self.require_codes and without:
            raise ValueError(
                f"require_codes: {', '.join(without)} must have a TOTP secret (totp_secrets), "
                "or set require_codes to false"
            )
        return self

    @model_validator(mode="after")
    def _emergency_needs_codes(self) -> ApprovalPolicy:
        without = [name for name in self.emergency_rollback if name not in self.totp_secrets]
        if without:
            raise ValueError(
                f"emergency_rollback: {', '.join(without)} must have a TOTP secret "
                "(totp_secrets): an emergency rollback is proven with a one-time code"
            )
        return self

    @field_validator("totp_secrets")
    @classmethod
    def _base32(cls, secrets: dict[str, SecretStr]) -> dict[str, SecretStr]:
        for approver, secret in secrets.items():
            try:
                decoded = decode_secret(secret.get_secret_value())
            except (binascii.Error, ValueError):
                raise ValueError(f"{approver}'s secret is not base32") from None
            if len(decoded) < 10:
                raise ValueError(f"{approver}'s secret is shorter than 80 bits")
        return secrets
