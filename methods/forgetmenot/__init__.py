"""Forget Me Not (Stern, Corn, Weinshall 2025): KF (i)/(∞), averaged and distilled KF.

Importing the package registers its methods, datasets, model families and paper metadata."""
import methods.forgetmenot.kf  # noqa: F401
import methods.forgetmenot.averaged_kf  # noqa: F401
import methods.forgetmenot.distilled_kf  # noqa: F401
import methods.forgetmenot.paper  # noqa: F401
