#!/bin/sh
# Trains a small SentencePiece unigram model the way T5's was configured
# (nmt_nfkc normalisation, pad 0, eos 1, unk 2, no bos) on corpus.txt and
# writes golden.tsv: each test sentence, a tab, and the ids Debian's
# spm_encode (sentencepiece 0.1.97) gives it. Run from this folder.
set -eu
spm_train --input=corpus.txt --model_prefix=tiny --vocab_size=300 --hard_vocab_limit=false --model_type=unigram \
  --pad_id=0 --eos_id=1 --unk_id=2 --bos_id=-1 --character_coverage=0.995 \
  --input_sentence_size=100000 --seed_sentencepiece_size=100000 --num_threads=1 >/dev/null 2>&1
spm_encode --model=tiny.model --output_format=id < sentences.txt > ids.txt
paste sentences.txt ids.txt > golden.tsv
rm ids.txt tiny.vocab
