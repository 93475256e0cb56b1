"""Size limits of the store, checked before proposing and again inside apply.

The numbers follow etcd where etcd has one, so that a client written for etcd
meets the same walls here.
"""

# etcd has no explicit key limit; keys here are paths like
# /registry/<resource>/<namespace>/<name>, far below this.
MAX_KEY_BYTES = 3 * 1024
# etcd's --max-request-bytes default: a value larger than this is refused.
MAX_VALUE_BYTES = 1536 * 1024
# etcd's --max-txn-ops default, per compare list and per branch.
MAX_TXN_OPS = 128
# etcd's MaxLeaseTTL.
MAX_LEASE_TTL_SECONDS = 9_000_000_000
