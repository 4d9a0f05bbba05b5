#!/usr/bin/env bash
# Publishes the marketer console to a deployed stack: builds it (scripts/build-console.sh),
# writes the stack's `ConsoleConfig` output beside the page as config.json (the marketers'
# sign-in, when the stack has MarketerSignInUrl and MarketerConsoleClientId), uploads the
# files under console/ in the stack's `ConsoleBucket`, and invalidates /console/* in its
# CloudFront distribution. Then open the `ConsoleUrl` output.
#
#   STACK=nearcast-prod bash scripts/publish-console.sh
#
# Needs the AWS CLI with credentials for the stack's account (as `sam deploy` does), npm
# and python3. Not run in CI, which has no AWS; the page, its config.json and the sign-in
# flow are what the browser test (tests/console/walk.mjs) checks on `nearcast serve`.
set -euo pipefail
cd "$(dirname "$0")/.."
: "${STACK:?set STACK to the name of the deployed stack}"
output() {
  aws cloudformation describe-stacks --stack-name "$STACK" \
    --query "Stacks[0].Outputs[?OutputKey=='$1'].OutputValue" --output text
}
bucket="$(output ConsoleBucketName)"
distribution="$(output ConsoleDistributionId)"
url="$(output ConsoleUrl)"
if [ -z "$bucket" ] || [ "$bucket" = None ]; then
  echo "publish-console: stack $STACK has no ConsoleBucketName output (deploy infra/template.yaml first)" >&2
  exit 1
fi
bash scripts/build-console.sh
staging="$(mktemp -d)"
trap 'rm -rf "$staging"' EXIT
cp -R crates/nearcast-console/dist/. "$staging/"
output ConsoleConfig > "$staging/config.json"
python3 -c 'import json, sys; json.load(open(sys.argv[1]))' "$staging/config.json"
# Small files, changed together: browsers revalidate each load rather than mix versions.
aws s3 sync "$staging/" "s3://$bucket/console/" --delete --cache-control no-cache
aws cloudfront create-invalidation --distribution-id "$distribution" --paths '/console/*' >/dev/null
echo "publish-console: $url"
