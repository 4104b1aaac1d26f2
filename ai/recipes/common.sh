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
