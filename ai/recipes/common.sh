# Shared by the training recipes (sourced, not run): group weights, the clinical folds' held-out
# patients, and run NAME ARGS... (train $T into $R/NAME, export $R/NAME.pt, skip when it exists;
# progress lines in $R/progress.log). The caller sets R and T.
G9="clinical=0.6,masksynth=0.2,real3d=0.07,phantoms=0.13"
G12="clinical=0.45,masksynth=0.35,real3d=0.07,phantoms=0.13"   # stages 12-14
GA="clinical=0.45,masksynth=0.42,real3d=0,phantoms=0.13"       # fold A': no real3d
GA9="clinical=0.6,masksynth=0.27,real3d=0,phantoms=0.13"
FOLD_B="tabriz101228,tabriz101627,tabriz102313,tabriz104670,tabriz104899"
FOLD_C="tabriz106639,tabriz107130,tabriz110218,tabriz111008,tabriz112776"
log() { echo "$(date -u +%H:%M:%S) $*" >> "$R/progress.log"; }
run() { local name=$1; shift; [ -f "$R/$name.pt" ] && { log "skip $name"; return; }
        log "start $name"; nice $T --out "$R/$name" --export "$R/$name.pt" "$@" > "$R/$name.log" 2>&1; log "done $name"; }
# continue_folds P W: the four fold files of W (foldA, foldA_prime, foldB, foldC) continued by $T
# as $R/${P}A0, ${P}A, ${P}B, ${P}C with each fold's group weights and hold-out; two at a time
# (the 3D folds A and A', then the clinical folds B and C), one thread each
continue_folds() { continue_folds_3d "$1" "$2"; continue_folds_clinical "$1" "$2"; }
continue_folds_3d() {
  local p=$1 w=$2
  ( run ${p}A0 --init $w/foldA.pt --group-weights $G12 --hold-out patient19 --threads 1 ) &
  ( run ${p}A --init $w/foldA_prime.pt --group-weights $GA --threads 1 ) &
  wait
}
continue_folds_clinical() {
  local p=$1 w=$2
  ( run ${p}B --init $w/foldB.pt --group-weights $G12 --hold-out $FOLD_B --threads 1 ) &
  ( run ${p}C --init $w/foldC.pt --group-weights $G12 --hold-out $FOLD_C --threads 1 ) &
  wait
}
