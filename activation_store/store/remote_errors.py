"""Storage failures as one-line ``ActstoreError``s, whichever client (s3fs/botocore or obstore) met them.

Only error codes and endpoints are quoted, never server messages, so nothing a
credential provider returned can reach the output."""
from __future__ import annotations

import re
from typing import Iterator, NoReturn
from urllib.parse import urlsplit

from ..errors import ActstoreError
from .urls import bucket, is_remote

_ACCESS_CODES = {"AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "InvalidToken",
                 "TokenRefreshRequired", "AllAccessDisabled", "AccountProblem", "403", "Forbidden", "401"}
_MISSING_CODES = {"NoSuchKey", "404", "NotFound"}
# obstore names no AWS error codes, but quotes the server's XML reply; its <Code> is all that is read of it
_XML_CODE = re.compile(r"<Code>\s*([A-Za-z0-9.]{1,64})\s*</Code>")


def _chain(exc: BaseException | None) -> Iterator[BaseException]:
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def _obstore_exceptions():
    try:
        from obstore import exceptions
    except ImportError:
        return None
    return exceptions


def _error_code(exc: BaseException) -> str | None:
    response = getattr(exc, "response", None)
    if isinstance(response, dict):  # botocore
        return str(response.get("Error", {}).get("Code") or "") or None
    found = _XML_CODE.search(str(exc))  # obstore: its BaseErrors, and the plain FileNotFoundError it raises
    return found.group(1) if found else None


def _obstore_error(cause: BaseException, url: str) -> ActstoreError | None:
    """obstore's failures that carry no error code, by class."""
    obs = _obstore_exceptions()
    if obs is None:
        return None
    if isinstance(cause, (obs.PermissionDeniedError, obs.UnauthenticatedError)):
        return ActstoreError(f"access to {url} denied; check the AWS credentials (AWS_PROFILE, "
                             f"AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, ~/.aws) or use --anon for a public bucket")
    if isinstance(cause, obs.GenericError) and "error sending request" in str(cause).lower():
        return ActstoreError(f"cannot reach the storage endpoint for {url}; check --endpoint-url and the network")
    if isinstance(cause, obs.BaseError) and not isinstance(cause, (obs.NotFoundError, obs.AlreadyExistsError)):
        return ActstoreError(f"storage request for {url} failed ({type(cause).__name__})")
    return None


def remote_error(exc: BaseException, url: str) -> ActstoreError | None:
    """A one-line error for a storage failure at ``url``, or None when ``exc`` is not one (a missing object is
    not: the caller decides what that means)."""
    if isinstance(exc, ActstoreError):
        return exc
    try:
        from botocore import exceptions as boto
    except ImportError:  # no s3fs: nothing of botocore's to translate
        boto = None
    for cause in _chain(exc):
        code = _error_code(cause)
        if code in _MISSING_CODES:
            return None
        if code == "NoSuchBucket":
            return ActstoreError(f"bucket '{bucket(url)}' does not exist ({url})")
        if code in _ACCESS_CODES:
            return ActstoreError(f"access to {url} denied ({code}); check the AWS credentials (AWS_PROFILE, "
                                 f"AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, ~/.aws) or use --anon for a public bucket")
        if boto is not None:
            if isinstance(cause, (boto.NoCredentialsError, boto.PartialCredentialsError)):
                return ActstoreError(f"no AWS credentials found for {url}; set AWS_PROFILE or "
                                     f"AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, or use --anon for a public bucket")
            if isinstance(cause, (boto.EndpointConnectionError, boto.ConnectTimeoutError, boto.ConnectionClosedError,
                                  boto.ReadTimeoutError)):
                endpoint = urlsplit(str(getattr(cause, "kwargs", {}).get("endpoint_url", "")))
                where = f"{endpoint.scheme}://{endpoint.netloc}" if endpoint.netloc else "the storage endpoint"
                return ActstoreError(f"cannot reach {where} for {url} ({type(cause).__name__}); "
                                     f"check --endpoint-url and the network")
            if isinstance(cause, boto.ClientError):
                return ActstoreError(f"storage request for {url} failed ({code or 'error'})")
            if isinstance(cause, boto.BotoCoreError):
                return ActstoreError(f"storage request for {url} failed ({type(cause).__name__})")
        error = _obstore_error(cause, url)
        if error is not None:
            return error
        if isinstance(cause, PermissionError) and is_remote(url):
            return ActstoreError(f"access to {url} denied; check the credentials or use --anon for a public bucket")
    return None


def raise_remote(exc: BaseException, url: str) -> NoReturn:
    """Re-raise ``exc`` as a one-line error when it is a storage failure; otherwise unchanged."""
    error = remote_error(exc, url)
    if error is None or error is exc:
        raise exc
    raise error from None
