# Fetches a gzipped tar of model directories into $MODEL_DIR: the Helm chart's `fetch-model`
# init container (model.source=fetch, an https:// URL) runs it, and so does scripts/cluster-up.sh
# to deliver the local cluster's model. POSIX sh + curl, sha256sum and tar (busybox is enough).
#   MODEL_URL         https:// (or http://) URL of the .tar.gz; a presigned S3/GCS URL works
#   MODEL_SHA256      optional: the archive must have this sha256 or nothing is unpacked
#   MODEL_DIR         where the model directories end up (an emptyDir in the pod)
#   CURL_AUTH_HEADER  optional: one request header, e.g. `Authorization: Bearer ...`
set -eu
archive="$MODEL_DIR/.models.tar.gz"
if [ -n "${CURL_AUTH_HEADER:-}" ]; then set -- --header "$CURL_AUTH_HEADER"; else set --; fi
curl --fail --silent --show-error --location --retry 5 --retry-delay 2 --retry-all-errors \
  --max-time 600 "$@" --output "$archive" "$MODEL_URL"
if [ -n "${MODEL_SHA256:-}" ]; then
  echo "$MODEL_SHA256  $archive" | sha256sum -c -
fi
tar -xzf "$archive" -C "$MODEL_DIR"
rm -f "$archive"
echo "fetch-model: $(ls "$MODEL_DIR" | tr '\n' ' ')in $MODEL_DIR"
