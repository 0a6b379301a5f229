"""`capmesh certs init DIR`: the mesh's own CA and the certificates for mTLS between the gateway
and its backends.

Writes, in DIR (private keys readable by the owner only):
- `ca.pem`, `ca-key.pem`: the mesh CA. Services trust only clients it signed
  (`tls_client_ca_file`), the gateway only backends it signed (`backend_tls_ca_file`); keep the
  key offline once the certificates are made;
- `service.pem`, `service-key.pem`: a certificate for every capability service
  (`tls_cert_file`, `tls_key_file`), named `capmesh-service`, the name the gateway checks (it dials
  backends by whatever address they registered, which no certificate could name in advance);
- `gateway.pem`, `gateway-key.pem`: the gateway's client certificate for dialling backends
  (`backend_tls_cert_file`, `backend_tls_key_file`).
"""

from __future__ import annotations

import datetime
import ipaddress
from pathlib import Path

import typer

FILES = ("ca.pem", "ca-key.pem", "service.pem", "service-key.pem", "gateway.pem", "gateway-key.pem")


def register(app: typer.Typer) -> None:
    certs = typer.Typer(no_args_is_help=True, help="The mesh CA and certificates for mTLS.")
    certs.command("init")(init)
    app.add_typer(certs, name="certs")


def init(
    directory: Path = typer.Argument(..., help="Where to write the CA and the certificates."),
    days: int = typer.Option(825, min=1, help="How long the service and gateway certificates are valid."),
    force: bool = typer.Option(False, "--force", help="Replace files that exist."),
) -> None:
    """Make the mesh CA and the service and gateway certificates (mTLS between gateway and backends)."""
    existing = [name for name in FILES if (directory / name).exists()]
    if existing and not force:
        typer.secho(f"capmesh certs init: {directory} already has {', '.join(existing)} (--force)", fg="red", err=True)
        raise typer.Exit(2)
    directory.mkdir(parents=True, exist_ok=True)
    for name, content in make_mesh_certificates(days).items():
        path = directory / name
        path.write_bytes(content)
        if name.endswith("-key.pem"):
            path.chmod(0o600)
    typer.echo(f"wrote {', '.join(FILES)} to {directory}")


def make_mesh_certificates(days: int = 825) -> dict[str, bytes]:
    """The PEM files of a new mesh: a CA and the service and gateway certificates it signs."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    from capmesh.services.runtime.trust import MESH_SERVICE_NAME

    now = datetime.datetime.now(datetime.UTC)

    def name(common_name: str) -> x509.Name:
        return x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, "capmesh"),
                x509.NameAttribute(NameOID.COMMON_NAME, common_name),
            ]
        )

    def pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
        return key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(name("capmesh mesh CA"))
        .issuer_name(name("capmesh mesh CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )

    def leaf(common_name: str) -> tuple[bytes, bytes]:
        key = ec.generate_private_key(ec.SECP256R1())
        names = [
            x509.DNSName(common_name),
            x509.DNSName("localhost"),
            x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        ]
        cert = (
            x509.CertificateBuilder()
            .subject_name(name(common_name))
            .issuer_name(ca.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                critical=False,
            )
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256())
        )
        return cert.public_bytes(serialization.Encoding.PEM), pem_key(key)

    service_pem, service_key = leaf(MESH_SERVICE_NAME)
    gateway_pem, gateway_key = leaf("capmesh-gateway")
    return {
        "ca.pem": ca.public_bytes(serialization.Encoding.PEM),
        "ca-key.pem": pem_key(ca_key),
        "service.pem": service_pem,
        "service-key.pem": service_key,
        "gateway.pem": gateway_pem,
        "gateway-key.pem": gateway_key,
    }
