"""`ApprovalPolicy`: who may approve a production release, and how they prove it."""

from __future__ import annotations

from prefect.blocks.core import Block
from pydantic import Field, SecretStr


class ApprovalPolicy(Block):
    """Who may approve production releases; optional one-time codes prove who approved."""

    _block_type_name = "Approval Policy"
    _block_type_slug = "approval-policy"
    _description = "Approvers of production releases, self-approval, one-time codes and timeout."

    approvers: list[str] = Field(min_length=1, description="Names allowed to approve or reject.")
    allow_self_approval: bool = Field(
        default=False, description="Whether the requester may approve their own release."
    )
    totp_secrets: dict[str, SecretStr] = Field(
        default_factory=dict,
        description="Base32 TOTP secret per approver (RFC 6238); those approvers must give a code.",
    )
    timeout_s: float = Field(
        default=86400.0, gt=0, description="How long a release waits for approval (24 h)."
    )
