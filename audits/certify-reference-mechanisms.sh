#!/usr/bin/env bash
# Certify every reference mechanism on the seed harness's run; compare with its EXPECTED VERDICT.
set -u
mkdir -p out
status=0
for f in mechanisms/*.py; do
  name=$(basename "$f" .py)
  expected=$(grep -o 'EXPECTED VERDICT: [a-z]*' "$f" | awk '{print $3}')
  dpaudit certify "$f" --dataset-size 60000 --batch-size 256 --epochs 5 --epsilon 3 --delta 1e-5 \
    --json "out/certify-$name.json" --report "out/certify-$name.md" --no-progress > "out/certify-$name.txt"
  code=$?
  got=$([ $code -eq 0 ] && echo pass || ([ $code -eq 1 ] && echo fail || echo error))
  printf '%-28s expected %-4s got %-5s\n' "$name" "$expected" "$got"
  [ "$got" = "$expected" ] || status=1
done
exit $status
